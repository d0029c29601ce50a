//! Command arguments, checked the way QEMU's QAPI input visitor checks
//! them, with its messages: members are read in schema order (a missing
//! or mistyped one is reported first), then anything left over is
//! unexpected.

use super::protocol::QmpError;
use serde_json::{Map, Value};

/// A QAPI enum: its wire names.
pub trait QapiEnum: Sized + Copy + 'static {
    /// Every value with its name, in schema order.
    const VALUES: &'static [(&'static str, Self)];

    /// The value's wire name.
    fn name(self) -> &'static str;

    /// The value called `s`, if any.
    fn from_name(s: &str) -> Option<Self> {
        Self::VALUES.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }
}

/// The arguments of one command, consumed member by member.
///
/// ```
/// use kvmkit_vmm_reference::qmp::Args;
/// use serde_json::json;
/// let mut a = Args::new(json!({"calc-time": 1, "bogus": 2}).as_object().unwrap().clone());
/// assert_eq!(a.required_int("calc-time"), Ok(1));
/// assert_eq!(a.finish().unwrap_err().desc, "Parameter 'bogus' is unexpected");
/// let mut a = Args::new(json!({"calc-time": "1"}).as_object().unwrap().clone());
/// assert_eq!(a.required_int("calc-time").unwrap_err().desc,
///            "Invalid parameter type for 'calc-time', expected: integer");
/// ```
#[derive(Debug, Default)]
pub struct Args {
    map: Map<String, Value>,
}

fn wrong_type(name: &str, expected: &str) -> QmpError {
    QmpError::generic(format!(
        "Invalid parameter type for '{name}', expected: {expected}"
    ))
}

impl Args {
    /// Wraps a request's `arguments`.
    pub fn new(map: Map<String, Value>) -> Self {
        Args { map }
    }

    /// An optional `int` member.
    pub fn optional_int(&mut self, name: &str) -> Result<Option<i64>, QmpError> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "integer")),
        }
    }

    /// A mandatory `int` member.
    pub fn required_int(&mut self, name: &str) -> Result<i64, QmpError> {
        self.optional_int(name)?
            .ok_or_else(|| QmpError::generic(format!("Parameter '{name}' is missing")))
    }

    /// An optional `str` member.
    pub fn optional_str(&mut self, name: &str) -> Result<Option<String>, QmpError> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "string")),
        }
    }

    /// A mandatory `str` member.
    pub fn required_str(&mut self, name: &str) -> Result<String, QmpError> {
        self.optional_str(name)?
            .ok_or_else(|| QmpError::generic(format!("Parameter '{name}' is missing")))
    }

    /// An optional `bool` member.
    pub fn optional_bool(&mut self, name: &str) -> Result<Option<bool>, QmpError> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "boolean")),
        }
    }

    /// An optional member of enum type `E`.
    pub fn optional_enum<E: QapiEnum>(&mut self, name: &str) -> Result<Option<E>, QmpError> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(Value::String(s)) => E::from_name(&s).map(Some).ok_or_else(|| {
                QmpError::generic(format!("Parameter '{name}' does not accept value '{s}'"))
            }),
            Some(_) => Err(wrong_type(name, "string")),
        }
    }

    /// An optional list of enum `E`. As in QEMU, a bad element is named
    /// `name[i]` when its type is wrong and `null` when its value is
    /// unknown (the visitor has no name for list elements there).
    pub fn optional_enum_list<E: QapiEnum>(
        &mut self,
        name: &str,
    ) -> Result<Option<Vec<E>>, QmpError> {
        let list = match self.map.remove(name) {
            None => return Ok(None),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(wrong_type(name, "array")),
        };
        let mut out = Vec::with_capacity(list.len());
        for (i, v) in list.into_iter().enumerate() {
            let Value::String(s) = v else {
                return Err(wrong_type(&format!("{name}[{i}]"), "string"));
            };
            let e = E::from_name(&s).ok_or_else(|| {
                QmpError::generic(format!("Parameter 'null' does not accept value '{s}'"))
            })?;
            out.push(e);
        }
        Ok(Some(out))
    }

    /// Ends the visit: any member not read is unexpected.
    pub fn finish(self) -> Result<(), QmpError> {
        match self.map.keys().next() {
            Some(k) => Err(QmpError::generic(format!("Parameter '{k}' is unexpected"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Color {
        Red,
        Blue,
    }

    impl QapiEnum for Color {
        const VALUES: &'static [(&'static str, Self)] =
            &[("red", Color::Red), ("blue", Color::Blue)];
        fn name(self) -> &'static str {
            match self {
                Color::Red => "red",
                Color::Blue => "blue",
            }
        }
    }

    fn args(v: Value) -> Args {
        Args::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn ints_bools_and_missing() {
        let mut a =
            args(json!({"n": 5, "f": 1.5, "b": true, "s": "x", "big": 18446744073709551615u64}));
        assert_eq!(a.optional_int("n"), Ok(Some(5)));
        assert_eq!(a.optional_int("n"), Ok(None), "consumed");
        assert_eq!(
            a.optional_int("f").unwrap_err().desc,
            "Invalid parameter type for 'f', expected: integer"
        );
        assert_eq!(
            a.optional_int("big").unwrap_err().desc,
            "Invalid parameter type for 'big', expected: integer"
        );
        assert_eq!(a.optional_bool("b"), Ok(Some(true)));
        assert_eq!(
            a.optional_bool("s").unwrap_err().desc,
            "Invalid parameter type for 's', expected: boolean"
        );
        assert_eq!(a.optional_bool("none"), Ok(None));
        assert_eq!(
            a.required_int("m").unwrap_err().desc,
            "Parameter 'm' is missing"
        );
        assert_eq!(a.finish(), Ok(()));
        let mut a = args(json!({"n": null}));
        assert!(a.optional_int("n").is_err(), "null is not an integer");
    }

    #[test]
    fn enums_and_lists() {
        let mut a = args(json!({"c": "blue", "d": "green", "e": 3}));
        assert_eq!(a.optional_enum::<Color>("c"), Ok(Some(Color::Blue)));
        assert_eq!(
            a.optional_enum::<Color>("d").unwrap_err().desc,
            "Parameter 'd' does not accept value 'green'"
        );
        assert_eq!(
            a.optional_enum::<Color>("e").unwrap_err().desc,
            "Invalid parameter type for 'e', expected: string"
        );
        assert_eq!(Color::Red.name(), "red");

        let mut a = args(json!({"l": ["red", "blue"], "m": ["red", 1], "n": ["x"], "o": {}}));
        assert_eq!(
            a.optional_enum_list::<Color>("l"),
            Ok(Some(vec![Color::Red, Color::Blue]))
        );
        assert_eq!(
            a.optional_enum_list::<Color>("m").unwrap_err().desc,
            "Invalid parameter type for 'm[1]', expected: string"
        );
        assert_eq!(
            a.optional_enum_list::<Color>("n").unwrap_err().desc,
            "Parameter 'null' does not accept value 'x'"
        );
        assert_eq!(
            a.optional_enum_list::<Color>("o").unwrap_err().desc,
            "Invalid parameter type for 'o', expected: array"
        );
        assert_eq!(a.optional_enum_list::<Color>("p"), Ok(None));
    }
}
