//! The graph IR: typed tensor ops in a petgraph graph, with a text form that round-trips.

pub mod graph;
pub mod op;
pub mod parse;
pub mod print;
pub mod quantized;
pub mod types;
pub mod verify;

pub use graph::{Graph, Node, NodeId};
pub use op::{Attr, Op};
pub use parse::{parse, ParseError};
pub use print::print;
pub use types::{DType, Dim, TensorType};
pub use verify::{verify, Stage, VerifyError};
