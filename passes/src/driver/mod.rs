//! The driver layer: what the commands do, as library calls the tests can make directly. The
//! command line (`src/commands`) parses options, calls these and prints.

pub mod compile;
