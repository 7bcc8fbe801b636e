//! `codegen{target=x86|portable,cpu=C,act=f32|int8}`: hands the packed module to the backend of
//! the target (`backend::create`), which generates its code (x86: `kernels.so`) and the kernel
//! table; `emit-artifact` then puts both into the artifact. The graph is unchanged.

use crate::backend::{self, Backend};
use crate::module::Module;
use crate::pass::{Changed, Pass, PassError, PassOptions};

pub struct Codegen {
    backend: Box<dyn Backend>,
}

impl Codegen {
    pub fn from_options(options: &PassOptions) -> Result<Codegen, PassError> {
        Ok(Codegen {
            backend: backend::create(options)?,
        })
    }
}

impl Pass for Codegen {
    fn name(&self) -> &'static str {
        "codegen"
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        m.model
            .as_ref()
            .ok_or_else(|| PassError::needs_model("codegen"))?;
        m.code = Some(self.backend.generate(m)?);
        Ok(Changed::No)
    }
}
