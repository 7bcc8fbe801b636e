//! Metadata values and the key/value map, with typed lookups whose errors name the key.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    pub(super) fn as_usize(&self) -> Option<usize> {
        self.as_i128().and_then(|v| usize::try_from(v).ok())
    }

    /// A float as the decimal it was written from: f32 metadata such as `1e-5` would otherwise
    /// widen to 9.999999747378752e-06.
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.to_string().parse().unwrap_or(v as f64)),
            Value::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) | Value::U16(_) | Value::U32(_) | Value::U64(_) => "an unsigned integer",
            Value::I8(_) | Value::I16(_) | Value::I32(_) | Value::I64(_) => "an integer",
            Value::F32(_) | Value::F64(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
        }
    }

    /// Short human-readable form for the summary.
    pub(super) fn display(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Array(items) => format!("[{} items]", items.len()),
            v => v
                .as_i128()
                .map(|i| i.to_string())
                .or_else(|| v.as_f64().map(|f| f.to_string()))
                .unwrap_or_default(),
        }
    }
}

/// The metadata key/value pairs, with typed lookups whose errors name the key.
pub(super) struct Metadata(pub(super) BTreeMap<String, Value>);

impl Metadata {
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    fn require(&self, key: &str) -> Result<&Value, String> {
        self.get(key)
            .ok_or_else(|| format!("missing metadata key `{key}`"))
    }

    fn wrong_type(key: &str, wanted: &str, found: &Value) -> String {
        format!(
            "metadata `{key}` should be {wanted}, found {}",
            found.type_name()
        )
    }

    pub(super) fn opt_usize(&self, key: &str) -> Result<Option<usize>, String> {
        self.get(key)
            .map(|v| {
                v.as_usize()
                    .ok_or_else(|| Self::wrong_type(key, "a non-negative integer", v))
            })
            .transpose()
    }

    pub(super) fn usize(&self, key: &str) -> Result<usize, String> {
        self.require(key)?;
        Ok(self.opt_usize(key)?.unwrap_or_default())
    }

    pub(super) fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| Self::wrong_type(key, "a number", v))
            })
            .transpose()
    }

    pub(super) fn f64(&self, key: &str) -> Result<f64, String> {
        self.require(key)?;
        Ok(self.opt_f64(key)?.unwrap_or_default())
    }

    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong_type(key, "a bool", v)),
        }
    }

    pub(super) fn opt_str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong_type(key, "a string", v)),
        }
    }

    pub(super) fn str(&self, key: &str) -> Result<&str, String> {
        self.require(key)?;
        Ok(self.opt_str(key)?.unwrap_or_default())
    }

    pub(super) fn str_array(&self, key: &str) -> Result<Vec<&str>, String> {
        let wanted = "an array of strings";
        let value = self.require(key)?;
        let Value::Array(items) = value else {
            return Err(Self::wrong_type(key, wanted, value));
        };
        items
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.as_str()),
                other => Err(Self::wrong_type(key, wanted, other)),
            })
            .collect()
    }

    pub(super) fn opt_int_array(&self, key: &str) -> Result<Option<Vec<i128>>, String> {
        let wanted = "an array of integers";
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_i128().ok_or_else(|| Self::wrong_type(key, wanted, v)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(Self::wrong_type(key, wanted, v)),
        }
    }
}
