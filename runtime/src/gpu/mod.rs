//! The CUDA side of `--target ptx` artifacts. The driver (libcuda) is loaded at run time through
//! cudarc's `dynamic-loading`, so the runtime builds, and its tests run, on machines without a
//! GPU: `Gpu::open` then says in one line that there is none.
//!
//! What runs on a GPU today: the decode kernels of `kernels.ptx`, one per packed projection
//! shape, over weights in the GPU layout (`gpu_layout`). `check` runs each against the reference
//! decoder and times it (`pqc-gpu-check`). The layer's other ops, prefill and a generation loop
//! on the GPU are not written yet.

pub mod check;

use crate::error::ArtifactError;
use crate::format::BLOCK;
use crate::gpu_layout::GpuMatrix;
use crate::manifest::Launch;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DriverError, LaunchConfig,
    PushKernelArg,
};
use std::path::Path;
use std::sync::Arc;

/// One GPU with an artifact's kernels loaded.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Its compute capability as `sm_XY`.
    pub arch: String,
}

/// A packed projection on the device, with the kernel that multiplies by it.
pub struct DeviceMatrix {
    pub rows: usize,
    pub cols: usize,
    planes: Vec<CudaSlice<u32>>,
    factor: CudaSlice<f32>,
    function: CudaFunction,
    /// Bytes one product reads: codes, factors and activations.
    pub bytes_read: usize,
}

/// Whether this machine has the CUDA driver library.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its usual names; nothing is called from it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// `sm_90` → 90.
fn sm_number(arch: &str) -> Option<u32> {
    arch.strip_prefix("sm_")?.parse().ok()
}

/// Activations as the decode kernels read them: fp16 bits, zero past `cols` up to whole blocks.
pub fn fp16_activations(x: &[f32]) -> Vec<u16> {
    let mut out: Vec<u16> = x
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect();
    out.resize(x.len().div_ceil(BLOCK) * BLOCK, 0);
    out
}

fn driver(what: &str) -> impl Fn(DriverError) -> ArtifactError + '_ {
    move |e| ArtifactError::Run(format!("CUDA: {what}: {e}"))
}

impl Gpu {
    /// Opens GPU 0 and loads `ptx` (the text of `file`), which was generated for `arch`.
    pub fn open(file: &Path, ptx: &str, arch: &str) -> Result<Gpu, ArtifactError> {
        if !driver_present() {
            return Err(ArtifactError::file(
                file,
                "this machine has no CUDA driver (libcuda.so): a PTX artifact runs on an NVIDIA GPU",
            ));
        }
        let ctx = CudaContext::new(0).map_err(driver("no usable GPU"))?;
        let name = ctx.name().map_err(driver("device name"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("compute capability"))?;
        let have = (major * 10 + minor) as u32;
        let need = sm_number(arch).ok_or_else(|| {
            ArtifactError::file(file, format!("target GPU `{arch}` is not sm_XY"))
        })?;
        if have < need {
            return Err(ArtifactError::file(
                file,
                format!(
                    "compiled for {arch}, but {name} is sm_{have} (compile with --gpu sm_{have})"
                ),
            ));
        }
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| ArtifactError::file(file, format!("the driver refuses the PTX: {e}")))?;
        Ok(Gpu {
            stream: ctx.default_stream(),
            ctx,
            module,
            name,
            arch: format!("sm_{have}"),
        })
    }

    /// Copies `m` to the device with the kernel `symbol` that multiplies by it.
    pub fn upload(&self, m: &GpuMatrix, symbol: &str) -> Result<DeviceMatrix, ArtifactError> {
        let function = self
            .module
            .load_function(symbol)
            .map_err(|e| ArtifactError::Run(format!("kernels.ptx has no kernel {symbol}: {e}")))?;
        let planes = m
            .planes
            .iter()
            .map(|p| self.stream.clone_htod(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(driver("copying the codes"))?;
        let factor = self
            .stream
            .clone_htod(&m.factor)
            .map_err(driver("copying the factors"))?;
        let bytes_read =
            m.code_bytes() + 4 * m.rows + 2 * m.cols.div_ceil(BLOCK) * BLOCK + 4 * m.rows;
        Ok(DeviceMatrix {
            rows: m.rows,
            cols: m.cols,
            planes,
            factor,
            function,
            bytes_read,
        })
    }

    /// Device memory holding `values`.
    pub fn copy_in<T: cudarc::driver::DeviceRepr>(
        &self,
        values: &[T],
    ) -> Result<CudaSlice<T>, ArtifactError> {
        self.stream
            .clone_htod(values)
            .map_err(driver("copying to the device"))
    }

    /// The values of device memory.
    pub fn copy_out<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        values: &CudaSlice<T>,
    ) -> Result<Vec<T>, ArtifactError> {
        self.stream
            .clone_dtoh(values)
            .map_err(driver("copying from the device"))
    }

    /// `y = m · x` (x from `fp16_activations`), queued on the stream.
    pub fn gemv(
        &self,
        m: &DeviceMatrix,
        x: &CudaSlice<u16>,
        y: &mut CudaSlice<f32>,
        launch: Launch,
    ) -> Result<(), ArtifactError> {
        if x.len() < m.cols.div_ceil(BLOCK) * BLOCK || y.len() < m.rows {
            return Err(ArtifactError::Run(format!(
                "gemv {}x{}: x holds {}, y {}",
                m.rows,
                m.cols,
                x.len(),
                y.len()
            )));
        }
        let blocks = (m.rows as u32).div_ceil(launch.rows_per_block);
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (launch.threads_per_block, 1, 1),
            shared_mem_bytes: 0,
        };
        // One-plane formats pass their plane twice; the kernel reads the second only at 3 bits.
        let second = m.planes.get(1).unwrap_or(&m.planes[0]);
        let mut args = self.stream.launch_builder(&m.function);
        args.arg(&m.planes[0])
            .arg(second)
            .arg(&m.factor)
            .arg(x)
            .arg(y);
        // SAFETY: the kernel's parameters are (plane0, plane1, factor, x, y) as pushed; every
        // buffer holds what the shape needs (checked above and by `upload`), and the grid covers
        // the rows with the manifest's launch shape, which the kernel was generated for.
        unsafe { args.launch(cfg) }.map_err(driver("launching the decode kernel"))?;
        Ok(())
    }

    /// Waits for the queued work.
    pub fn synchronize(&self) -> Result<(), ArtifactError> {
        self.stream.synchronize().map_err(driver("synchronize"))
    }

    /// Milliseconds `work` takes on the stream, by events around it.
    pub fn time_ms(
        &self,
        work: impl FnOnce() -> Result<(), ArtifactError>,
    ) -> Result<f64, ArtifactError> {
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(timing).map_err(driver("event"))?;
        let end = self.ctx.new_event(timing).map_err(driver("event"))?;
        start.record(&self.stream).map_err(driver("event"))?;
        work()?;
        end.record(&self.stream).map_err(driver("event"))?;
        end.synchronize().map_err(driver("event"))?;
        Ok(start.elapsed_ms(&end).map_err(driver("event"))? as f64)
    }

    /// Device-to-device copy bandwidth (bytes read plus written per second) over `bytes`.
    pub fn copy_bandwidth(&self, bytes: usize) -> Result<f64, ArtifactError> {
        let n = bytes / 4;
        let src = self
            .stream
            .alloc_zeros::<u32>(n)
            .map_err(driver("allocating"))?;
        let mut dst = self
            .stream
            .alloc_zeros::<u32>(n)
            .map_err(driver("allocating"))?;
        let copy = |dst: &mut CudaSlice<u32>| {
            self.stream
                .memcpy_dtod(&src, dst)
                .map_err(driver("copying on the device"))
        };
        copy(&mut dst)?;
        let rounds = 5;
        let ms = self.time_ms(|| (0..rounds).try_for_each(|_| copy(&mut dst)))?;
        Ok(2.0 * (n * 4) as f64 * rounds as f64 / (ms / 1e3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_are_fp16_padded_to_whole_blocks() {
        let x = fp16_activations(&[1.0, -2.5, 1.0 + 2f32.powi(-11)]);
        assert_eq!(x.len(), BLOCK);
        assert_eq!(&x[..4], &[0x3c00, 0xc100, 0x3c00, 0]);
    }

    #[test]
    fn opening_without_a_driver_says_so() {
        if driver_present() {
            return; // a GPU machine: `check`'s test covers it there
        }
        let err = Gpu::open(Path::new("a.pqc/kernels.ptx"), "", "sm_90")
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(
            message.contains("a.pqc/kernels.ptx") && message.contains("no CUDA driver"),
            "{message}"
        );
    }
}
