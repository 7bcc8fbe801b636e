//! `emit-artifact`: the last pass of `compile`. Builds the artifact in memory from a packed module
//! and the backend's code: `weights.safetensors` (every tensor the graph reads, packed codes as
//! u8 with their floored per-row scales, everything else f32; the dense tensor a packed head
//! replaces is left out), `tokenizer.json`, the backend's files, and the manifest that names
//! them with their checksums. The driver writes it to disk atomically (and signs it).

use crate::ir::Op;
use crate::module::{manifest_config, ArtifactFiles, Module};
use crate::pack::PackedTensor;
use crate::pass::{Changed, Pass, PassError};
use crate::quant::Bits;
use crate::transforms::pack_head::head_source;
use crate::transforms::qat_lower::projection_module;
use paretoqc_runtime::manifest::{self, FileSum, HeadStorage, Manifest};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const NAME: &str = "emit-artifact";

pub struct EmitArtifact;

fn fail(message: impl Into<String>) -> PassError {
    PassError::failed(NAME, message)
}

impl Pass for EmitArtifact {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let info = m
            .model
            .as_ref()
            .ok_or_else(|| PassError::needs_model(NAME))?;
        let code = m
            .code
            .as_ref()
            .ok_or_else(|| fail("needs the code of a target: put codegen{target=...} before it"))?;
        let weights = weights_file(m)?;
        let tokenizer = info
            .tokenizer
            .as_ref()
            .ok_or_else(|| {
                fail(format!(
                    "{}: missing tokenizer.json beside config.json (an artifact needs it)",
                    info.source.display()
                ))
            })?
            .to_string(false)
            .map_err(|e| fail(format!("cannot serialize the tokenizer: {e}")))?
            .into_bytes();
        let mut files = vec![
            (manifest::WEIGHTS.to_string(), weights),
            (manifest::TOKENIZER.to_string(), tokenizer),
        ];
        files.extend(code.files.iter().cloned());
        let manifest = Manifest {
            format_version: manifest::FORMAT_VERSION,
            producer: producer(),
            model: manifest_config(&info.config),
            target: code.target.clone(),
            lm_head: m.head,
            activations: code.activations,
            projections: projection_bits(m),
            kernels: code.symbols.clone(),
            files: files
                .iter()
                .map(|(name, bytes)| (name.clone(), FileSum::of(bytes)))
                .collect(),
            launch: code.launch,
        };
        m.artifact = Some(ArtifactFiles { manifest, files });
        Ok(Changed::No)
    }
}

fn producer() -> String {
    format!("paretoqc {}", env!("CARGO_PKG_VERSION"))
}

/// Projection module -> bits (`Full` for projections left dense), from the packed graph.
pub fn projection_bits(m: &Module) -> BTreeMap<String, Bits> {
    let g = &m.graph;
    let mut bits = BTreeMap::new();
    for (name, id) in g.params() {
        let users = g.users(id);
        if let Some(module) = name.strip_suffix(".qweight") {
            let packed = users.iter().find_map(|&u| match g.node(u).op {
                Op::PackedLinear { bits, .. } => Some(bits),
                _ => None,
            });
            if let Some(b) = packed {
                bits.insert(module.to_string(), b);
            }
        } else if let Some(module) = projection_module(name) {
            if !users.is_empty() {
                bits.entry(module.to_string()).or_insert(Bits::Full);
            }
        }
    }
    bits
}

/// weights.safetensors: every param the graph reads and every packed tensor with its scales
/// (codes as u8, the rest f32), less the dense tensor a packed head replaces.
fn weights_file(m: &Module) -> Result<Vec<u8>, PassError> {
    let g = &m.graph;
    let scales: HashMap<String, &PackedTensor> = m
        .packed
        .iter()
        .map(|(codes, p)| (codes.replace(".qweight", ".weight_clip_val"), p))
        .collect();
    let mut names: BTreeSet<&str> = g
        .params()
        .filter(|(_, id)| !g.users(*id).is_empty())
        .map(|(n, _)| n)
        .collect();
    names.extend(m.packed.keys().map(String::as_str));
    names.extend(scales.keys().map(String::as_str));
    if m.head != HeadStorage::F32 {
        let tied = m
            .model
            .as_ref()
            .is_some_and(|i| i.config.tie_word_embeddings);
        names.remove(head_source(tied));
    }
    let mut views = Vec::new();
    for name in names {
        let view = if let Some(p) = m.packed.get(name) {
            TensorView::new(
                Dtype::U8,
                vec![p.rows, p.format.row_bytes(p.cols)],
                &p.bytes,
            )
        } else if let Some(p) = scales.get(name) {
            TensorView::new(Dtype::F32, vec![p.rows, 1], f32_bytes(&p.scales))
        } else {
            let t = m
                .weights
                .get(name)
                .ok_or_else(|| fail(format!("no value for weight {name}")))?;
            TensorView::new(Dtype::F32, t.shape.clone(), f32_bytes(&t.data))
        };
        views.push((
            name.to_string(),
            view.map_err(|e| fail(format!("tensor {name}: {e}")))?,
        ));
    }
    let mut meta = HashMap::new();
    meta.insert("producer".to_string(), producer());
    safetensors::serialize(views, Some(meta)).map_err(|e| fail(e.to_string()))
}

/// The bytes of f32 values, as safetensors stores them (little endian, as x86 is).
fn f32_bytes(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns, u8 has alignment 1, and the length
    // covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}
