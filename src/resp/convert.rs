//! Conversions from replies into Rust types.
//!
//! Every conversion looks through attributes, turns an error reply into
//! [`Error::Server`], and reports a mismatch as a [`ConversionError`] naming
//! both sides. RESP2 and RESP3 shapes of the same reply convert alike: a
//! map or a list of pairs (`HashMap`, `BTreeMap`, `Vec<(A, B)>`) converts
//! from a RESP3 map, a RESP2 flat array of key, value, key, value, or an
//! array of two-element arrays; a boolean from `#t` or from `:1`; nil is
//! `None` for an `Option` and empty for a collection. Tuples convert from
//! arrays of exactly their length.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

use bytes::Bytes;

use super::Value;
use crate::error::{ConversionError, Error};

/// A Rust type a reply can be converted into.
pub trait FromValue: Sized {
    /// Converts the reply.
    fn from_value(value: Value) -> Result<Self, Error>;
}

/// Peels attributes and turns error replies into errors.
#[inline]
fn plain(value: Value) -> Result<Value, Error> {
    match value {
        Value::Error(e) => Err(e.into()),
        Value::Attributed { .. } => value.into_result(),
        v => Ok(v),
    }
}

fn mismatch(found: &Value, target: &'static str) -> Error {
    ConversionError {
        found: found.type_name(),
        target,
        detail: None,
    }
    .into()
}

fn invalid(found: &'static str, target: &'static str, detail: &'static str) -> Error {
    ConversionError {
        found,
        target,
        detail: Some(detail),
    }
    .into()
}

impl FromValue for Value {
    /// The reply as it is, except that an error reply becomes `Err`.
    fn from_value(value: Value) -> Result<Self, Error> {
        value.into_result()
    }
}

impl FromValue for () {
    fn from_value(value: Value) -> Result<Self, Error> {
        plain(value).map(drop)
    }
}

impl FromValue for Bytes {
    #[inline]
    fn from_value(value: Value) -> Result<Self, Error> {
        match plain(value)? {
            Value::SimpleString(b) | Value::BulkString(b) | Value::BigNumber(b) => Ok(b),
            Value::Verbatim { text, .. } => Ok(text),
            Value::Integer(i) => Ok(Bytes::from(i.to_string())),
            Value::Double(d) => Ok(Bytes::from(d.to_string())),
            other => Err(mismatch(&other, "Bytes")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Result<Self, Error> {
        Bytes::from_value(value).map(Vec::from)
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, Error> {
        let found = value.type_name();
        let bytes = Bytes::from_value(value)?;
        String::from_utf8(bytes.into()).map_err(|_| invalid(found, "String", "not valid UTF-8"))
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> Result<Self, Error> {
                const TARGET: &str = stringify!($t);
                match plain(value)? {
                    Value::Integer(i) => <$t>::try_from(i)
                        .map_err(|_| invalid("integer", TARGET, "out of range")),
                    Value::Boolean(b) => Ok(<$t>::from(b)),
                    Value::SimpleString(b) | Value::BulkString(b) | Value::BigNumber(b) => {
                        std::str::from_utf8(&b)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| invalid("string", TARGET, "not an integer in range"))
                    }
                    other => Err(mismatch(&other, TARGET)),
                }
            }
        }
    )*};
}
int_from_value!(
    i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize
);

macro_rules! float_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> Result<Self, Error> {
                const TARGET: &str = stringify!($t);
                match plain(value)? {
                    Value::Double(d) => Ok(d as $t),
                    Value::Integer(i) => Ok(i as $t),
                    Value::SimpleString(b) | Value::BulkString(b) => std::str::from_utf8(&b)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| invalid("string", TARGET, "not a number")),
                    other => Err(mismatch(&other, TARGET)),
                }
            }
        }
    )*};
}
float_from_value!(f32, f64);

impl FromValue for bool {
    /// `#t`/`#f`; integers (non-zero is true, as RESP2 `EXISTS` and
    /// `SISMEMBER` answer); `+OK` is true; nil is false (a RESP2 `SET NX`
    /// that did not set); bulk `"1"`/`"0"`.
    fn from_value(value: Value) -> Result<Self, Error> {
        match plain(value)? {
            Value::Boolean(b) => Ok(b),
            Value::Integer(i) => Ok(i != 0),
            Value::Nil => Ok(false),
            Value::SimpleString(s) if &s[..] == b"OK" => Ok(true),
            Value::BulkString(s) | Value::SimpleString(s) => match &s[..] {
                b"1" => Ok(true),
                b"0" => Ok(false),
                _ => Err(invalid("string", "bool", "not 0 or 1")),
            },
            other => Err(mismatch(&other, "bool")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    /// Nil is `None`; anything else converts as `T`.
    #[inline]
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Nil => Ok(None),
            Value::Error(e) => Err(e.into()),
            Value::Attributed { .. } => Self::from_value(value.without_attributes()),
            v => T::from_value(v).map(Some),
        }
    }
}

/// The elements of an aggregate: arrays, sets and pushes as they are, maps
/// flattened to key, value, key, value; nil as empty.
fn elements(value: Value, target: &'static str) -> Result<Vec<Value>, Error> {
    match plain(value)? {
        Value::Array(items) | Value::Set(items) | Value::Push(items) => Ok(items),
        Value::Map(pairs) => Ok(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Ok(Vec::new()),
        other => Err(mismatch(&other, target)),
    }
}

/// Key/value pairs: a RESP3 map; an array of two-element arrays (RESP3
/// `ZRANGE ... WITHSCORES`, RESP2 `XREAD`); or a flat array of even length,
/// key, value, key, value (RESP2 `HGETALL`). An array whose elements are
/// all two-element arrays is read as the second shape.
fn pairs(value: Value, target: &'static str) -> Result<Vec<(Value, Value)>, Error> {
    match plain(value)? {
        Value::Map(pairs) => Ok(pairs),
        Value::Array(items) if !items.is_empty() && items.iter().all(is_pair) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(two) => {
                    let [k, v]: [Value; 2] = two.try_into().expect("checked: two elements");
                    Ok((k, v))
                }
                _ => unreachable!("checked: an array"),
            })
            .collect(),
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut items = items.into_iter();
            let mut pairs = Vec::with_capacity(items.len() / 2);
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            Ok(pairs)
        }
        Value::Array(_) => Err(invalid(
            "array",
            target,
            "odd number of elements: not key, value pairs",
        )),
        Value::Nil => Ok(Vec::new()),
        other => Err(mismatch(&other, target)),
    }
}

fn is_pair(v: &Value) -> bool {
    matches!(v, Value::Array(two) if two.len() == 2)
}

/// Element types of `Vec<T>`. `u8` is left out on purpose: a `Vec<u8>` is
/// a byte string, not an array of small integers.
pub trait FromValueElement: FromValue {
    /// Reads a `Vec<Self>` from a reply. By default each element of an
    /// array, set or push converts on its own (a map gives its keys and
    /// values in turn; nil is empty); pairs `(A, B)` read the shapes of a
    /// map instead (see the module documentation).
    fn vec_from_value(value: Value) -> Result<Vec<Self>, Error> {
        elements(value, "Vec")?
            .into_iter()
            .map(Self::from_value)
            .collect()
    }
}

macro_rules! element {
    ($($t:ty),*) => {$( impl FromValueElement for $t {} )*};
}
element!(
    Value,
    (),
    Bytes,
    String,
    bool,
    f32,
    f64,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u16,
    u32,
    u64,
    u128,
    usize
);
impl FromValueElement for Vec<u8> {}
impl<T: FromValue> FromValueElement for Option<T> {}
impl<T: FromValueElement> FromValueElement for Vec<T> {}
impl<K: FromValue + Eq + Hash, V: FromValue, S: BuildHasher + Default> FromValueElement
    for HashMap<K, V, S>
{
}
impl<K: FromValue + Ord, V: FromValue> FromValueElement for BTreeMap<K, V> {}
impl<T: FromValue + Eq + Hash, S: BuildHasher + Default> FromValueElement for HashSet<T, S> {}

impl<A: FromValue, B: FromValue> FromValueElement for (A, B) {
    /// Pairs from a RESP3 map, an array of two-element arrays or a RESP2
    /// flat array of even length; an odd one is a [`ConversionError`].
    fn vec_from_value(value: Value) -> Result<Vec<Self>, Error> {
        pairs(value, "Vec<(A, B)>")?
            .into_iter()
            .map(|(a, b)| Ok((A::from_value(a)?, B::from_value(b)?)))
            .collect()
    }
}

impl<T: FromValueElement> FromValue for Vec<T> {
    fn from_value(value: Value) -> Result<Self, Error> {
        T::vec_from_value(value)
    }
}

impl<T: FromValue + Eq + Hash, S: BuildHasher + Default> FromValue for HashSet<T, S> {
    fn from_value(value: Value) -> Result<Self, Error> {
        elements(value, "HashSet")?
            .into_iter()
            .map(T::from_value)
            .collect()
    }
}

impl<K: FromValue + Eq + Hash, V: FromValue, S: BuildHasher + Default> FromValue
    for HashMap<K, V, S>
{
    fn from_value(value: Value) -> Result<Self, Error> {
        pairs(value, "HashMap")?
            .into_iter()
            .map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?)))
            .collect()
    }
}

impl<K: FromValue + Ord, V: FromValue> FromValue for BTreeMap<K, V> {
    fn from_value(value: Value) -> Result<Self, Error> {
        pairs(value, "BTreeMap")?
            .into_iter()
            .map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?)))
            .collect()
    }
}

/// Tuples convert from an aggregate of exactly their length (a map counts
/// its keys and values), each element by its own type: `(String, f64)` is
/// one entry of RESP3 `ZRANGE ... WITHSCORES`, `(String, String)` the key
/// and value `BLPOP` pops.
macro_rules! tuple_from_value {
    ($($len:literal: ($($t:ident),+)),* $(,)?) => {$(
        impl<$($t: FromValue),+> FromValue for ($($t,)+) {
            fn from_value(value: Value) -> Result<Self, Error> {
                const TARGET: &str = concat!("a tuple of ", stringify!($len));
                let items: [Value; $len] = elements(value, TARGET)?
                    .try_into()
                    .map_err(|items: Vec<Value>| {
                        invalid("aggregate", TARGET, if items.len() < $len {
                            "too few elements"
                        } else {
                            "too many elements"
                        })
                    })?;
                #[allow(non_snake_case)]
                let [$($t),+] = items;
                Ok(($($t::from_value($t)?,)+))
            }
        }
    )*};
}
tuple_from_value!(
    1: (A),
    2: (A, B),
    3: (A, B, C),
    4: (A, B, C, D),
    5: (A, B, C, D, E),
    6: (A, B, C, D, E, F),
    7: (A, B, C, D, E, F, G),
    8: (A, B, C, D, E, F, G, H),
);

macro_rules! tuple_element {
    ($(($($t:ident),+)),* $(,)?) => {$(
        impl<$($t: FromValue),+> FromValueElement for ($($t,)+) {}
    )*};
}
tuple_element!(
    (A),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F),
    (A, B, C, D, E, F, G),
    (A, B, C, D, E, F, G, H),
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Decoder;

    fn decode(bytes: &[u8]) -> Value {
        Decoder::new().decode_all(bytes).unwrap().remove(0)
    }

    fn conv<T: FromValue>(bytes: &[u8]) -> Result<T, Error> {
        T::from_value(decode(bytes))
    }

    #[test]
    fn strings_and_bytes() {
        assert_eq!(conv::<String>(b"$3\r\nabc\r\n").unwrap(), "abc");
        assert_eq!(conv::<String>(b"+OK\r\n").unwrap(), "OK");
        assert_eq!(conv::<String>(b"=7\r\ntxt:abc\r\n").unwrap(), "abc");
        assert_eq!(conv::<String>(b":12\r\n").unwrap(), "12");
        assert_eq!(
            conv::<Vec<u8>>(b"$2\r\n\xff\x00\r\n").unwrap(),
            vec![0xff, 0]
        );
        assert_eq!(
            conv::<Bytes>(b"$1\r\nx\r\n").unwrap(),
            Bytes::from_static(b"x")
        );
        let err = conv::<String>(b"$1\r\n\xff\r\n").unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        assert!(matches!(
            conv::<String>(b"*0\r\n"),
            Err(Error::Conversion(_))
        ));
        assert!(matches!(
            conv::<String>(b"_\r\n"),
            Err(Error::Conversion(_))
        ));
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(conv::<i64>(b":-5\r\n").unwrap(), -5);
        assert_eq!(conv::<u16>(b"$4\r\n6379\r\n").unwrap(), 6379);
        assert!(conv::<u8>(b":300\r\n").is_err());
        assert!(conv::<u32>(b":-1\r\n").is_err());
        assert!(conv::<i64>(b"$3\r\nabc\r\n").is_err());
        assert_eq!(conv::<f64>(b",2.5\r\n").unwrap(), 2.5);
        assert_eq!(conv::<f64>(b"$3\r\n1.5\r\n").unwrap(), 1.5);
        assert_eq!(conv::<f64>(b":3\r\n").unwrap(), 3.0);
        assert_eq!(conv::<f64>(b"$4\r\n-inf\r\n").unwrap(), f64::NEG_INFINITY);
        assert!(conv::<bool>(b"#t\r\n").unwrap());
        assert!(conv::<bool>(b":1\r\n").unwrap());
        assert!(!conv::<bool>(b":0\r\n").unwrap());
        assert!(conv::<bool>(b"+OK\r\n").unwrap());
        assert!(!conv::<bool>(b"$-1\r\n").unwrap());
    }

    #[test]
    fn options_and_collections() {
        assert_eq!(conv::<Option<String>>(b"$-1\r\n").unwrap(), None);
        assert_eq!(conv::<Option<String>>(b"_\r\n").unwrap(), None);
        assert_eq!(conv::<Option<i64>>(b":1\r\n").unwrap(), Some(1));
        assert_eq!(
            conv::<Vec<Option<String>>>(b"*2\r\n$1\r\na\r\n$-1\r\n").unwrap(),
            vec![Some("a".to_string()), None]
        );
        assert_eq!(conv::<Vec<i64>>(b"~2\r\n:1\r\n:2\r\n").unwrap(), vec![1, 2]);
        assert_eq!(conv::<Vec<i64>>(b"*-1\r\n").unwrap(), Vec::<i64>::new());
        let resp3: HashMap<String, i64> = conv(b"%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n").unwrap();
        let resp2: HashMap<String, i64> =
            conv(b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n").unwrap();
        assert_eq!(resp3, resp2);
        assert_eq!(resp3["b"], 2);
        assert!(conv::<HashMap<String, i64>>(b"*1\r\n:1\r\n").is_err());
        let tree: BTreeMap<String, String> = conv(b"%1\r\n+k\r\n+v\r\n").unwrap();
        assert_eq!(tree["k"], "v");
        let set: HashSet<String> = conv(b"~2\r\n+x\r\n+y\r\n").unwrap();
        assert!(set.contains("x") && set.contains("y"));
        let scored: Vec<(String, f64)> = conv(b"*1\r\n*2\r\n$1\r\nm\r\n,1.5\r\n").unwrap();
        assert_eq!(scored, vec![("m".to_string(), 1.5)]);
    }

    #[test]
    fn pairs_from_every_shape() {
        let expected = vec![("a".to_string(), 1i64), ("b".to_string(), 2)];
        // RESP3 map (HGETALL), RESP2 flat array (HGETALL), array of
        // two-element arrays (RESP3 ZRANGE WITHSCORES, RESP2 XREAD).
        let resp3: Vec<(String, i64)> = conv(b"%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n").unwrap();
        let flat: Vec<(String, i64)> = conv(b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n").unwrap();
        let nested: Vec<(String, i64)> =
            conv(b"*2\r\n*2\r\n$1\r\na\r\n:1\r\n*2\r\n$1\r\nb\r\n:2\r\n").unwrap();
        assert_eq!(resp3, expected);
        assert_eq!(flat, expected);
        assert_eq!(nested, expected);
        // Scores: RESP2 sends them as strings, RESP3 as doubles.
        let scored: Vec<(String, f64)> = conv(b"*2\r\n$1\r\nm\r\n$3\r\n1.5\r\n").unwrap();
        assert_eq!(scored, vec![("m".to_string(), 1.5)]);
        let nested_map: HashMap<String, i64> = conv(b"*1\r\n*2\r\n$1\r\na\r\n:1\r\n").unwrap();
        assert_eq!(nested_map["a"], 1);
        let tree: BTreeMap<String, i64> = conv(b"*2\r\n$1\r\nz\r\n:9\r\n").unwrap();
        assert_eq!(tree["z"], 9);
        assert_eq!(
            conv::<Vec<(String, i64)>>(b"*-1\r\n").unwrap(),
            Vec::<(String, i64)>::new()
        );
        assert_eq!(
            conv::<Vec<(String, i64)>>(b"*0\r\n").unwrap(),
            Vec::<(String, i64)>::new()
        );
        match conv::<Vec<(String, i64)>>(b"*3\r\n+a\r\n:1\r\n+b\r\n") {
            Err(Error::Conversion(e)) => {
                assert_eq!(e.target, "Vec<(A, B)>");
                assert!(e.detail.unwrap().contains("odd"), "{e}");
            }
            other => panic!("expected a conversion error, got {other:?}"),
        }
        assert!(matches!(
            conv::<Vec<(String, i64)>>(b":1\r\n"),
            Err(Error::Conversion(_))
        ));
        // Nested entries whose values are flat pairs: an XRANGE reply.
        let entries: Vec<(String, Vec<(String, String)>)> =
            conv(b"*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$1\r\nw\r\n")
                .unwrap();
        assert_eq!(
            entries,
            vec![(
                "1-0".to_string(),
                vec![("f".into(), "v".into()), ("g".into(), "w".into())]
            )]
        );
    }

    #[test]
    fn tuples_from_fixed_size_arrays() {
        assert_eq!(conv::<(i64,)>(b"*1\r\n:7\r\n").unwrap(), (7,));
        let (k, v): (String, String) = conv(b"*2\r\n$1\r\nk\r\n$1\r\nv\r\n").unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("k", "v"));
        let three: (String, i64, Option<String>) = conv(b"*3\r\n+a\r\n:2\r\n_\r\n").unwrap();
        assert_eq!(three, ("a".to_string(), 2, None));
        let four: (i64, i64, i64, String) = conv(b"*4\r\n:1\r\n:2\r\n:3\r\n+x\r\n").unwrap();
        assert_eq!(four, (1, 2, 3, "x".to_string()));
        let eight: (u8, u8, u8, u8, u8, u8, u8, u8) =
            conv(b"*8\r\n:1\r\n:2\r\n:3\r\n:4\r\n:5\r\n:6\r\n:7\r\n:8\r\n").unwrap();
        assert_eq!(eight, (1, 2, 3, 4, 5, 6, 7, 8));
        for (wire, detail) in [
            (&b"*2\r\n:1\r\n:2\r\n"[..], "too few elements"),
            (&b"*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n"[..], "too many elements"),
        ] {
            match conv::<(i64, i64, i64)>(wire) {
                Err(Error::Conversion(e)) => assert_eq!(e.detail, Some(detail)),
                other => panic!("expected a conversion error, got {other:?}"),
            }
        }
        // Nil is not a tuple, but an Option of one (BLPOP's timeout).
        assert!(conv::<(String, String)>(b"_\r\n").is_err());
        assert_eq!(conv::<Option<(String, String)>>(b"*-1\r\n").unwrap(), None);
        let rows: Vec<(String, i64, i64)> =
            conv(b"*2\r\n*3\r\n+a\r\n:1\r\n:2\r\n*3\r\n+b\r\n:3\r\n:4\r\n").unwrap();
        assert_eq!(rows, vec![("a".into(), 1, 2), ("b".into(), 3, 4)]);
    }

    #[test]
    fn errors_and_attributes() {
        let err = conv::<String>(b"-ERR boom\r\n").unwrap_err();
        assert_eq!(err.server_error().unwrap().message(), b"ERR boom");
        assert!(conv::<Value>(b"-ERR boom\r\n").is_err());
        assert!(conv::<Option<String>>(b"-ERR boom\r\n").is_err());
        assert_eq!(conv::<i64>(b"|1\r\n+a\r\n+b\r\n:7\r\n").unwrap(), 7);
    }
}
