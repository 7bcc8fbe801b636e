//! Training checkpoints: `DIR/checkpoint/` holds the parameters, the optimizer's moments and a
//! state file; it is written into a temporary folder and swapped in.

use super::RunKey;
use anyhow::{bail, Context, Result};
use pqc::import::Weights;
use pqc::tensor::Tensor;
use pqc::train::optim::AdamW;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a checkpoint records besides tensors.
#[derive(Serialize, Deserialize)]
pub struct CheckpointState {
    pub key: RunKey,
    pub step: u64,
    pub losses: Vec<f64>,
    /// Where a staged recipe stands (absent for the plain recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<super::stage::StageState>,
}

/// Writes `DIR/checkpoint/` (params, optimizer moments, state) crash-safely: a new folder is
/// written and synced, then swapped in (`output::replace_dir_atomic`); a kill at any point leaves
/// the old or the new checkpoint whole, and the next save or resume finishes the swap.
pub fn save_checkpoint(
    out: &Path,
    key: &RunKey,
    weights: &Weights,
    opt: &AdamW,
    losses: &[f64],
    stage: Option<super::stage::StageState>,
) -> Result<()> {
    let tensors = |w: &Weights| -> Result<Vec<u8>> {
        crate::output::safetensors_bytes(
            w.iter()
                .map(|(n, t)| (n.as_str(), &t.shape[..], &t.data[..])),
            None,
        )
    };
    let state = CheckpointState {
        key: key.clone(),
        step: opt.step,
        losses: losses.to_vec(),
        stage,
    };
    crate::output::replace_dir_atomic(&out.join("checkpoint"), |dir| {
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes)
                .with_context(|| format!("{}: cannot write", dir.join(name).display()))
        };
        write("params.safetensors", &tensors(weights)?)?;
        write("adam_m.safetensors", &tensors(&opt.m)?)?;
        write("adam_v.safetensors", &tensors(&opt.v)?)?;
        write(
            "state.json",
            serde_json::to_string_pretty(&state)?.as_bytes(),
        )
    })
}

pub fn load_checkpoint(
    dir: &Path,
    key: &RunKey,
    weights: &mut Weights,
    opt: &mut AdamW,
) -> Result<CheckpointState> {
    let ck = dir.join("checkpoint");
    crate::output::recover_dir_swap(&ck)?;
    let state_path = ck.join("state.json");
    let text = std::fs::read_to_string(&state_path)
        .with_context(|| format!("{}: no checkpoint to resume", state_path.display()))?;
    let state: CheckpointState =
        serde_json::from_str(&text).with_context(|| state_path.display().to_string())?;
    if state.key.model_params != key.model_params {
        bail!("{}: this checkpoint was written for another model (its weights differ in names or shapes)", ck.display());
    }
    if state.key != *key {
        bail!(
            "{}: this checkpoint was written by a run with other settings (recipe, bits/plan, steps, seq-len, batch, lr, warmup, seed, data or time budget); resume with the same ones",
            ck.display()
        );
    }
    *weights = read_tensors(&ck.join("params.safetensors"))?;
    opt.m = read_tensors(&ck.join("adam_m.safetensors"))?;
    opt.v = read_tensors(&ck.join("adam_v.safetensors"))?;
    opt.step = state.step;
    Ok(state)
}

pub fn read_tensors(path: &Path) -> Result<Weights> {
    Ok(pqc::import::safetensors::read_safetensors(path)?
        .into_iter()
        .collect::<std::collections::BTreeMap<String, Tensor>>())
}
