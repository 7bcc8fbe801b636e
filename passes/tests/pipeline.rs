//! `compile` as one pass pipeline, called through the driver as the command line calls it: the
//! pipeline the options give, each pass's effect on the module (values computed inside the
//! passes), and the artifact it builds, against the interpreter's lowering.

use paretoqc_runtime::manifest::{ActivationKind, Arch, HeadStorage, WEIGHTS};
use pqc::driver::compile::{
    compile, pass_manager, pipeline, CompileOptions, Instrumentation, Quantize, TargetKind,
};
use pqc::import::load_model;
use pqc::pipeline::PrintIr;
use pqc::quant::Bits;
use std::path::Path;

fn tiny() -> pqc::import::Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models/tiny-llama");
    load_model(&dir).unwrap()
}

fn options(head: HeadStorage) -> CompileOptions {
    CompileOptions {
        quantize: Quantize::Bits(Bits::Two),
        target: TargetKind::Portable,
        cpu: "native".into(),
        gpu: "sm_90".into(),
        head,
        activations: ActivationKind::F32,
    }
}

#[test]
fn the_pipeline_computes_scales_codes_and_the_artifact() {
    let text = pipeline(&options(HeadStorage::Int8)).unwrap();
    assert_eq!(
        text,
        "qat-lower{bits=2},pack-weights,pack-head{format=int8},dce,codegen{act=f32,target=portable},emit-artifact"
    );
    let inst = Instrumentation {
        print_ir: PrintIr::After(vec!["pack-weights".into()]),
        timing: true,
    };
    let mut pm = pass_manager(&text, &inst).unwrap();
    let mut log = vec![];
    let (m, report) = compile(tiny(), &mut pm, &mut log).unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains("IR Dump After pack-weights"), "{log}");
    assert!(log.contains("packed_linear"), "{log}");
    assert!(log.contains("Execution time report"), "{log}");
    let names: Vec<&str> = report.passes.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "qat-lower",
            "pack-weights",
            "pack-head",
            "dce",
            "codegen",
            "emit-artifact"
        ]
    );

    // qat-lower set each scale (the reference's rule), pack-weights packed with them: the codes
    // decode to the fake-quantized weight of every projection.
    let layers = m.model.as_ref().unwrap().config.num_hidden_layers;
    assert_eq!(
        m.packed.len(),
        7 * layers + 1,
        "7 projections a layer and the head"
    );
    for (codes, p) in &m.packed {
        let Some(module) = codes.strip_suffix(".qweight").filter(|c| *c != "lm_head") else {
            continue;
        };
        let w = &m.weights[&format!("{module}.weight")];
        let s = &m.weights[&format!("{module}.weight_clip_val")];
        assert_eq!(
            s.data,
            pqc::quant::init_scales(Bits::Two, &w.data, w.row_len())
        );
        let want = pqc::quant::fake_quant(Bits::Two, &w.data, &s.data, w.row_len());
        assert_eq!(p.dequantize(), want, "{module}");
    }

    // The artifact: every projection at 2 bits, the int8 head replacing the tied embedding,
    // and the files the manifest sums.
    let art = m.artifact.as_ref().unwrap();
    assert!(art.manifest.projections.values().all(|&b| b == Bits::Two));
    assert_eq!(art.manifest.projections.len(), 7 * layers);
    assert_eq!(art.manifest.lm_head, HeadStorage::Int8);
    assert_eq!(art.manifest.target.arch, Arch::Portable);
    for (name, bytes) in &art.files {
        assert_eq!(art.manifest.files[name].bytes, bytes.len() as u64, "{name}");
    }
    let weights = &art.files.iter().find(|f| f.0 == WEIGHTS).unwrap().1;
    let st = safetensors::SafeTensors::deserialize(weights).unwrap();
    let stored: Vec<String> = st.names().into_iter().map(String::from).collect();
    assert!(stored.contains(&"lm_head.qweight".to_string()));
    assert!(!stored.contains(&"model.embed_tokens.weight".to_string()));
    assert!(
        !stored.iter().any(|n| n.ends_with("proj.weight")),
        "latent weights: {stored:?}"
    );
}

#[test]
fn a_pipeline_without_the_artifact_or_the_code_is_refused() {
    let inst = Instrumentation::default();
    let err = pass_manager("qat-lower{bits=2},pack-weights", &inst)
        .err()
        .unwrap();
    assert!(err.to_string().contains("emit-artifact"), "{err}");
    let mut pm = pass_manager("qat-lower{bits=2},pack-weights,emit-artifact", &inst).unwrap();
    let err = compile(tiny(), &mut pm, &mut std::io::sink())
        .err()
        .unwrap();
    assert!(err.to_string().contains("codegen"), "{err}");
    let err = pass_manager("codegen{target=x86,act=int4},emit-artifact", &inst)
        .err()
        .unwrap();
    assert!(err.to_string().contains("int4"), "{err}");
}

#[test]
fn pass_options_never_read_a_device_or_an_endless_file() {
    // A pipeline string names files; one naming a device must be refused at once, not read.
    for pipeline in [
        "pareto-search{plan=/dev/zero}",
        "pareto-search{costs=/dev/zero,budget=1MB}",
    ] {
        let err = pqc::pipeline::PassManager::parse(pipeline).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("/dev/zero") && message.contains("not a regular file"),
            "{pipeline}: {message:?}"
        );
    }
}
