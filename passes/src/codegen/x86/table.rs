//! The kernel table of `kernels.so` (`paretoqc_runtime::kernels::table` defines the layout and
//! the checks): one exported constant `pqc_kernel_table_v1` pointing at one entry per kernel
//! (role, symbol, width, shape, signature version, function pointer). The runtime resolves
//! kernels only through it.

use super::emit::CodegenError;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::values::{BasicValueEnum, PointerValue};
use inkwell::AddressSpace;
use paretoqc_runtime::kernels::table::{
    RawEntry, RawTable, Role, SIGNATURE_VERSION, TABLE_MAGIC, TABLE_SYMBOL, TABLE_VERSION,
};
use std::collections::BTreeMap;

/// A private constant NUL-terminated string.
fn c_string<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, s: &str) -> PointerValue<'ctx> {
    let value = ctx.const_string(s.as_bytes(), true);
    let g = module.add_global(value.get_type(), None, "pqc_kernel_name");
    g.set_initializer(&value);
    g.set_constant(true);
    g.set_linkage(Linkage::Private);
    g.as_pointer_value()
}

/// Adds the table of `symbols` (role -> function symbol, every function defined in `module`).
pub fn emit_table<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    symbols: &BTreeMap<Role, String>,
) -> Result<(), CodegenError> {
    let ptr = ctx.ptr_type(AddressSpace::default());
    let (i32t, i64t) = (ctx.i32_type(), ctx.i64_type());
    let entry_ty = ctx.struct_type(
        &[
            ptr.into(),
            ptr.into(),
            i32t.into(),
            i32t.into(),
            i64t.into(),
            i64t.into(),
            ptr.into(),
        ],
        false,
    );
    let mut entries = Vec::with_capacity(symbols.len());
    for (role, symbol) in symbols {
        let function = module.get_function(symbol).ok_or_else(|| {
            CodegenError::Llvm(format!("kernel `{symbol}` ({role}) is not in the module"))
        })?;
        let fields: [BasicValueEnum; 7] = [
            c_string(ctx, module, &role.to_string()).into(),
            c_string(ctx, module, symbol).into(),
            i32t.const_int(role.bits() as u64, false).into(),
            i32t.const_int(SIGNATURE_VERSION as u64, false).into(),
            i64t.const_int(role.a as u64, false).into(),
            i64t.const_int(role.b as u64, false).into(),
            function.as_global_value().as_pointer_value().into(),
        ];
        entries.push(entry_ty.const_named_struct(&fields));
    }
    let array = entry_ty.const_array(&entries);
    let list = module.add_global(array.get_type(), None, "pqc_kernel_entries_v1");
    list.set_initializer(&array);
    list.set_constant(true);
    list.set_linkage(Linkage::Private);
    let table_ty = ctx.struct_type(
        &[
            i64t.into(),
            i32t.into(),
            i32t.into(),
            i64t.into(),
            ptr.into(),
        ],
        false,
    );
    let table = table_ty.const_named_struct(&[
        i64t.const_int(TABLE_MAGIC, false).into(),
        i32t.const_int(TABLE_VERSION as u64, false).into(),
        i32t.const_int(std::mem::size_of::<RawEntry>() as u64, false)
            .into(),
        i64t.const_int(entries.len() as u64, false).into(),
        list.as_pointer_value().into(),
    ]);
    let g = module.add_global(table_ty, None, TABLE_SYMBOL);
    g.set_initializer(&table);
    g.set_constant(true);
    g.set_linkage(Linkage::External);
    debug_assert_eq!(std::mem::size_of::<RawTable>(), 32);
    Ok(())
}
