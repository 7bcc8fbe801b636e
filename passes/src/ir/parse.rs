//! The text form (`.pqir`) parser: the inverse of `print`. `parse(print(g)) == g` for every graph
//! (tested on every file under testdata). Comments run from `//` to the end of the line.
//!
//! ```text
//! graph @name(%tokens: i32[T]) -> (f32[T,64]) {
//!   %0 = param @model.norm.weight : f32[64]
//!   %1 = rms_norm %x, %0 {eps = 1e-5} : f32[T,64]
//!   return %1
//! }
//! ```

use super::graph::{Graph, NodeId};
use super::op::{Attr, Attrs, Op};
use super::types::{DType, Dim, TensorType};
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Value(String),  // %name
    Symbol(String), // @name
    Ident(String),
    Number(String),
    Str(String),
    Punct(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Value(s) => write!(f, "%{s}"),
            Tok::Symbol(s) => write!(f, "@{s}"),
            Tok::Ident(s) | Tok::Number(s) => f.write_str(s),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Punct(p) => f.write_str(p),
        }
    }
}

const PUNCT: &[&str] = &["->", "=", ",", "{", "}", "(", ")", ":", "[", "]"];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Splits one line into tokens; `line` is for error messages.
fn lex_line(text: &str, line: usize) -> Result<Vec<Tok>, ParseError> {
    let err = |m: String| ParseError { line, message: m };
    let code = text.split("//").next().unwrap_or("");
    let mut toks = vec![];
    let mut rest = code.trim_start();
    while !rest.is_empty() {
        let c = rest.chars().next().unwrap_or(' ');
        let (tok, len) = if let Some(p) = PUNCT.iter().find(|p| rest.starts_with(**p)) {
            (Tok::Punct(p), p.len())
        } else if c == '%' || c == '@' {
            let n = rest[1..]
                .find(|ch: char| !is_name_char(ch))
                .unwrap_or(rest.len() - 1);
            if n == 0 {
                return Err(err(format!("`{c}` must be followed by a name")));
            }
            let name = rest[1..1 + n].to_string();
            (
                if c == '%' {
                    Tok::Value(name)
                } else {
                    Tok::Symbol(name)
                },
                1 + n,
            )
        } else if c == '"' {
            let end = rest[1..]
                .find('"')
                .ok_or_else(|| err("unterminated string".into()))?;
            (Tok::Str(rest[1..1 + end].to_string()), end + 2)
        } else if c.is_ascii_digit() || c == '-' || c == '+' {
            let n = rest
                .find(|ch: char| !(is_name_char(ch) || ch == '+'))
                .unwrap_or(rest.len());
            (Tok::Number(rest[..n].to_string()), n)
        } else if c.is_ascii_alphabetic() || c == '_' {
            let n = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            (Tok::Ident(rest[..n].to_string()), n)
        } else {
            return Err(err(format!("unexpected character `{c}`")));
        };
        toks.push(tok);
        rest = rest[len..].trim_start();
    }
    Ok(toks)
}

/// A cursor over one line's tokens.
struct Line {
    toks: Vec<Tok>,
    at: usize,
    line: usize,
}

impl Line {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Result<Tok, ParseError> {
        match self.toks.get(self.at).cloned() {
            Some(t) => {
                self.at += 1;
                Ok(t)
            }
            None => self.err("unexpected end of line"),
        }
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.at += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat(p) {
            return Ok(());
        }
        let found = self
            .peek()
            .map_or("end of line".to_string(), |t| format!("`{t}`"));
        self.err(format!("expected `{p}`, found {found}"))
    }

    fn value(&mut self) -> Result<String, ParseError> {
        match self.next()? {
            Tok::Value(v) => Ok(v),
            t => self.err(format!("expected a %value, found `{t}`")),
        }
    }

    fn done(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => self.err(format!("unexpected `{t}` at end of line")),
        }
    }

    fn ty(&mut self) -> Result<TensorType, ParseError> {
        let dtype = match self.next()? {
            Tok::Ident(d) => {
                DType::parse(&d).map_or_else(|| self.err(format!("unknown dtype `{d}`")), Ok)?
            }
            t => return self.err(format!("expected a type, found `{t}`")),
        };
        self.expect("[")?;
        let mut dims = vec![];
        while !self.eat("]") {
            if !dims.is_empty() {
                self.expect(",")?;
            }
            dims.push(match self.next()? {
                Tok::Number(n) => Dim::Fixed(
                    n.parse()
                        .map_or_else(|_| self.err(format!("bad dimension `{n}`")), Ok)?,
                ),
                Tok::Ident(s) => Dim::Sym(s),
                t => return self.err(format!("expected a dimension, found `{t}`")),
            });
        }
        Ok(TensorType::new(dtype, dims))
    }

    fn attrs(&mut self) -> Result<Attrs, ParseError> {
        let mut attrs = Attrs::new();
        if !self.eat("{") {
            return Ok(attrs);
        }
        while !self.eat("}") {
            if !attrs.is_empty() {
                self.expect(",")?;
            }
            let key = match self.next()? {
                Tok::Ident(k) => k,
                t => return self.err(format!("expected an attribute name, found `{t}`")),
            };
            self.expect("=")?;
            let value = self.attr_value()?;
            if attrs.insert(key.clone(), value).is_some() {
                return self.err(format!("attribute `{key}` given twice"));
            }
        }
        Ok(attrs)
    }

    fn attr_value(&mut self) -> Result<Attr, ParseError> {
        match self.next()? {
            Tok::Str(s) => Ok(Attr::Str(s)),
            Tok::Ident(b) if b == "true" || b == "false" => Ok(Attr::Bool(b == "true")),
            Tok::Number(n)
                if n.contains(['.', 'e', 'E']) || n.contains("inf") || n.contains("NaN") =>
            {
                n.parse()
                    .map(Attr::Float)
                    .map_or_else(|_| self.err(format!("bad number `{n}`")), Ok)
            }
            Tok::Number(n) => n
                .parse()
                .map(Attr::Int)
                .map_or_else(|_| self.err(format!("bad integer `{n}`")), Ok),
            t => self.err(format!("expected an attribute value, found `{t}`")),
        }
    }
}

/// Parses one graph from text.
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            lex_line(l, i + 1).map(|toks| Line {
                toks,
                at: 0,
                line: i + 1,
            })
        })
        .filter(|l| !matches!(l, Ok(l) if l.toks.is_empty()));
    let mut header = match lines.next() {
        Some(l) => l?,
        None => {
            return Err(ParseError {
                line: 1,
                message: "empty input: expected `graph @name(...)`".into(),
            })
        }
    };
    let (mut g, mut values) = parse_header(&mut header)?;
    for line in lines {
        let mut line = line?;
        if line.eat("}") {
            return line.done().map(|_| g);
        }
        if line.peek() == Some(&Tok::Ident("return".into())) {
            line.at += 1;
            let outs = parse_operands(&mut line, &values)?;
            line.done()?;
            g.set_outputs(outs);
        } else {
            parse_node(&mut line, &mut g, &mut values)?;
        }
    }
    Err(ParseError {
        line: text.lines().count(),
        message: "missing closing `}`".into(),
    })
}

fn parse_header(l: &mut Line) -> Result<(Graph, HashMap<String, NodeId>), ParseError> {
    if l.next()? != Tok::Ident("graph".into()) {
        return l.err("expected `graph @name(...)`");
    }
    let name = match l.next()? {
        Tok::Symbol(s) => s,
        t => return l.err(format!("expected the graph's @name, found `{t}`")),
    };
    let mut g = Graph::new(name);
    let mut values = HashMap::new();
    l.expect("(")?;
    while !l.eat(")") {
        if !values.is_empty() {
            l.expect(",")?;
        }
        let v = l.value()?;
        l.expect(":")?;
        let ty = l.ty()?;
        if values.insert(v.clone(), g.add_input(&v, ty)).is_some() {
            return l.err(format!("input %{v} declared twice"));
        }
    }
    l.expect("->")?;
    l.expect("(")?;
    let mut n = 0;
    while !l.eat(")") {
        if n > 0 {
            l.expect(",")?;
        }
        l.ty()?; // result types are printed for the reader; the verifier checks the returned nodes
        n += 1;
    }
    l.expect("{")?;
    l.done()?;
    Ok((g, values))
}

fn parse_operands(
    l: &mut Line,
    values: &HashMap<String, NodeId>,
) -> Result<Vec<NodeId>, ParseError> {
    let mut ids = vec![];
    while let Some(Tok::Value(_)) = l.peek() {
        let v = l.value()?;
        match values.get(&v) {
            Some(&id) => ids.push(id),
            None => return l.err(format!("use of undefined value %{v}")),
        }
        if !l.eat(",") {
            break;
        }
    }
    Ok(ids)
}

fn parse_node(
    l: &mut Line,
    g: &mut Graph,
    values: &mut HashMap<String, NodeId>,
) -> Result<(), ParseError> {
    let result = l.value()?;
    if values.contains_key(&result) {
        return l.err(format!("value %{result} defined twice"));
    }
    l.expect("=")?;
    let opname = match l.next()? {
        Tok::Ident(o) => o,
        t => return l.err(format!("expected an op name, found `{t}`")),
    };
    let (op, operands) = if opname == "param" {
        match l.next()? {
            Tok::Symbol(s) if g.param_id(&s).is_none() => (Op::Param { name: s }, vec![]),
            Tok::Symbol(s) => return l.err(format!("param @{s} declared twice")),
            t => return l.err(format!("expected a @weight name, found `{t}`")),
        }
    } else {
        let operands = parse_operands(l, values)?;
        let attrs = l.attrs()?;
        (
            Op::from_parts(&opname, &attrs).map_or_else(|m| l.err(m), Ok)?,
            operands,
        )
    };
    l.expect(":")?;
    let ty = l.ty()?;
    l.done()?;
    values.insert(result, g.add_typed(op, &operands, ty));
    Ok(())
}
