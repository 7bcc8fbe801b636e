//! `pack-head{format=int8|int4}`: stores the output projection (the `lm_head`, or the tied
//! embedding) as per-row codes, `lm_head.qweight` with its per-row scales, in place of the dense
//! f32 tensor in the artifact (`PackedTensor::int8_rows`, `int4_rows`). The graph is unchanged:
//! the runtime reads the head's storage from the manifest. Without this pass the head stays f32.

use crate::module::Module;
use crate::pack::PackedTensor;
use crate::pass::{Changed, Pass, PassError, PassOptions};
use paretoqc_runtime::manifest::HeadStorage;

const NAME: &str = "pack-head";

pub struct PackHead {
    format: HeadStorage,
}

impl PackHead {
    pub fn from_options(options: &PassOptions) -> Result<PackHead, PassError> {
        if let Some(k) = options.keys().find(|k| *k != "format") {
            return Err(PassError::Pipeline(format!(
                "pass `{NAME}` has no option `{k}` (it takes format=int8|int4)"
            )));
        }
        let format = match options.get("format").map(String::as_str) {
            Some(f) => HeadStorage::parse(f).map_err(PassError::Pipeline)?,
            None => {
                return Err(PassError::Pipeline(format!(
                    "pass `{NAME}` needs format=int8|int4"
                )))
            }
        };
        Ok(PackHead { format })
    }
}

impl Pass for PackHead {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let pack: fn(&[f32], usize) -> PackedTensor = match self.format {
            HeadStorage::F32 => return Ok(Changed::No),
            HeadStorage::Int8 => PackedTensor::int8_rows,
            HeadStorage::Int4 => PackedTensor::int4_rows,
        };
        let info = m
            .model
            .as_ref()
            .ok_or_else(|| PassError::needs_model(NAME))?;
        let source = head_source(info.config.tie_word_embeddings);
        let w = m
            .weights
            .get(source)
            .ok_or_else(|| PassError::failed(NAME, format!("no value for {source}")))?;
        m.packed
            .insert("lm_head.qweight".into(), pack(&w.data, w.row_len()));
        m.head = self.format;
        Ok(Changed::No)
    }
}

/// The dense tensor the output head reads: the tied embedding, or `lm_head.weight`. A packed
/// head's codes replace it in the artifact.
pub fn head_source(tied: bool) -> &'static str {
    if tied {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    }
}
