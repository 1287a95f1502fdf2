//! Floats in `report.json` that may be NaN or infinite (a NaN in a trace, the infinite headroom of
//! an exact point): JSON has no such numbers and serde_json would write `null`, which does not
//! read back as a float. These are written as the strings `"NaN"`, `"inf"` and `"-inf"`, and read
//! back from those, from numbers, and from `null` (as NaN).

use serde::{Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Num(f64),
    Text(String),
    Null(()),
}

fn from_repr<E: serde::de::Error>(r: Repr) -> Result<f64, E> {
    match r {
        Repr::Num(v) => Ok(v),
        Repr::Null(()) => Ok(f64::NAN),
        Repr::Text(s) => match s.as_str() {
            "NaN" | "nan" => Ok(f64::NAN),
            "inf" | "+inf" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(E::custom(format!(
                "expected a number, `NaN`, `inf` or `-inf`, found `{other}`"
            ))),
        },
    }
}

pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    from_repr(Repr::deserialize(d)?)
}

/// The same for a list of floats.
pub mod vec {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        struct One(f64);
        impl serde::Serialize for One {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(&self.0, s)
            }
        }
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&One(*x))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<super::Repr>::deserialize(d)?
            .into_iter()
            .map(super::from_repr)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug)]
    struct T {
        #[serde(with = "super")]
        a: f64,
        #[serde(with = "super::vec")]
        b: Vec<f64>,
    }

    #[test]
    fn non_finite_values_round_trip() {
        let t = T {
            a: f64::INFINITY,
            b: vec![1.5, f64::NAN, f64::NEG_INFINITY],
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"a":"inf","b":[1.5,"NaN","-inf"]}"#);
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(back.a, f64::INFINITY);
        assert!(back.b[1].is_nan() && back.b[2] == f64::NEG_INFINITY);
        let null: T = serde_json::from_str(r#"{"a":null,"b":[null]}"#).unwrap();
        assert!(null.a.is_nan() && null.b[0].is_nan());
        assert!(serde_json::from_str::<T>(r#"{"a":"x","b":[]}"#).is_err());
    }
}
