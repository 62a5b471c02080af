//! Checks run on a plist from outside before it is parsed into values, whose parsers recurse:
//!
//! - A binary plist can reference one object from many places, so a few hundred bytes can describe
//!   a structure with billions of nodes (a "plist bomb"), and a parser walks all of them. This walks
//!   the object graph once, with memoised sizes, and rejects cycles and expansions past a bound.
//! - Any plist (XML, binary or ASCII) can nest arrays and dictionaries tens of thousands of levels
//!   deep within a small file; building values from it recurses once per level and overflows the
//!   stack, which would let a hostile kext crash the detector. A walk that gives up at a fixed
//!   depth checks it first.

/// Deeper than any real plist (Info.plists and managed preferences nest under ten levels), far too
/// shallow to exhaust a parser's stack.
pub const MAX_DEPTH: usize = 64;

/// More nodes than any real Info.plist has, by orders of magnitude.
const MAX_EXPANDED_OBJECTS: u64 = 100_000;

fn uint(b: &[u8], at: usize, size: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(size)?)?;
    Some(s.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// Object references held by the container at `offset`, if it is one.
fn children(b: &[u8], offset: usize, ref_size: usize) -> Result<Vec<u64>, String> {
    let marker = *b.get(offset).ok_or("object offset outside the file")?;
    let (kind, low) = (marker >> 4, (marker & 0x0f) as usize);
    if !matches!(kind, 0xA | 0xC | 0xD) {
        return Ok(Vec::new());
    }
    let (count, header) = if low == 0x0f {
        let int_marker = *b.get(offset + 1).ok_or("truncated object count")?;
        if int_marker >> 4 != 0x1 {
            return Err("bad object count".into());
        }
        let n = 1usize << (int_marker & 0x0f).min(3);
        (
            uint(b, offset + 2, n).ok_or("truncated object count")? as usize,
            2 + n,
        )
    } else {
        (low, 1)
    };
    let refs = if kind == 0xD {
        count.checked_mul(2)
    } else {
        Some(count)
    }
    .ok_or("object count overflows")?;
    if refs.saturating_mul(ref_size) > b.len() {
        return Err("object count exceeds the file".into());
    }
    (0..refs)
        .map(|i| {
            uint(b, offset + header + i * ref_size, ref_size)
                .ok_or_else(|| "truncated object references".to_string())
        })
        .collect()
}

/// Why a plist was refused before parsing (the reason, for the error that names the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlistRefused(pub String);

/// Refuse a plist that would exhaust a parser: too many objects once expanded, or too deep.
pub fn check(b: &[u8]) -> Result<(), PlistRefused> {
    if b.starts_with(b"bplist00") {
        check_expansion(b).map_err(PlistRefused)?;
    }
    check_depth(b).map_err(PlistRefused)
}

fn check_depth(b: &[u8]) -> Result<(), String> {
    plist::from_bytes::<ShallowEnough>(b)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Deserializes any plist, refusing one deeper than `MAX_DEPTH`. Recursion goes only through
/// `Nesting`, which stops at the bound, so the walk's own stack stays small.
struct ShallowEnough;

impl<'de> serde::Deserialize<'de> for ShallowEnough {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::DeserializeSeed::deserialize(Nesting(MAX_DEPTH), d).map(|_| ShallowEnough)
    }
}

/// How many more levels of arrays and dictionaries may open.
#[derive(Clone, Copy)]
struct Nesting(usize);

impl Nesting {
    fn inner<E: serde::de::Error>(self) -> Result<Nesting, E> {
        self.0
            .checked_sub(1)
            .map(Nesting)
            .ok_or_else(|| E::custom(format!("plist nests deeper than {MAX_DEPTH} levels")))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Nesting {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Nesting {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a plist value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while a.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while a.next_key_seed(inner)?.is_some() {
            a.next_value_seed(inner)?;
        }
        Ok(())
    }
}

fn check_expansion(b: &[u8]) -> Result<(), String> {
    if b.len() < 8 + 32 {
        return Err("binary plist too short".into());
    }
    let t = b.len() - 32;
    let offset_size = b[t + 6] as usize;
    let ref_size = b[t + 7] as usize;
    let (Some(n), Some(top), Some(table)) =
        (uint(b, t + 8, 8), uint(b, t + 16, 8), uint(b, t + 24, 8))
    else {
        return Err("binary plist trailer truncated".into());
    };
    if !(1..=8).contains(&offset_size)
        || !(1..=8).contains(&ref_size)
        || n == 0
        || n > b.len() as u64
        || top >= n
    {
        return Err("binary plist trailer is inconsistent".into());
    }
    let n = n as usize;
    let offsets: Vec<usize> = (0..n)
        .map(|i| uint(b, table as usize + i * offset_size, offset_size).map(|o| o as usize))
        .collect::<Option<_>>()
        .ok_or("binary plist offset table outside the file")?;

    // Iterative post-order walk: sizes memoised, a node met again while open is a cycle.
    const OPEN: u64 = u64::MAX;
    let mut size: Vec<Option<u64>> = vec![None; n];
    let mut stack: Vec<(usize, Vec<u64>, u64)> = Vec::new();
    let enter =
        |obj: usize, size: &mut Vec<Option<u64>>| -> Result<(usize, Vec<u64>, u64), String> {
            size[obj] = Some(OPEN);
            Ok((obj, children(b, offsets[obj], ref_size)?, 1))
        };
    stack.push(enter(top as usize, &mut size)?);
    while let Some((obj, kids, total)) = stack.last_mut() {
        match kids.pop() {
            Some(k) => {
                let k = usize::try_from(k)
                    .ok()
                    .filter(|k| *k < n)
                    .ok_or("object reference out of range")?;
                match size[k] {
                    Some(OPEN) => return Err("binary plist object graph has a cycle".into()),
                    Some(s) => *total = total.saturating_add(s),
                    None => {
                        let frame = enter(k, &mut size)?;
                        stack.push(frame);
                    }
                }
            }
            None => {
                let (obj, total) = (*obj, *total);
                if total > MAX_EXPANDED_OBJECTS {
                    return Err(format!(
                        "binary plist expands to more than {MAX_EXPANDED_OBJECTS} objects"
                    ));
                }
                size[obj] = Some(total);
                stack.pop();
                if let Some((_, _, parent_total)) = stack.last_mut() {
                    *parent_total = parent_total.saturating_add(total);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects of a hand-built binary plist; references are object indexes.
    enum Obj {
        Str(&'static str),
        Array(Vec<usize>),
        Dict(Vec<(usize, usize)>),
    }

    /// A minimal `bplist00` writer (the format Apple documents in CFBinaryPList.c), so each test
    /// can aim at one field; `plist` (an independent parser) confirms the well-formed ones.
    fn bplist(objs: &[Obj], ref_size: usize) -> Vec<u8> {
        let mut b = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        let count = |b: &mut Vec<u8>, kind: u8, n: usize| {
            if n < 15 {
                b.push(kind << 4 | n as u8);
            } else {
                b.push(kind << 4 | 0x0f);
                b.push(0x11); // a 2-byte integer follows
                b.extend_from_slice(&(n as u16).to_be_bytes());
            }
        };
        let r = |b: &mut Vec<u8>, v: usize| b.extend_from_slice(&v.to_be_bytes()[8 - ref_size..]);
        for o in objs {
            offsets.push(b.len());
            match o {
                Obj::Str(s) => {
                    count(&mut b, 0x5, s.len());
                    b.extend_from_slice(s.as_bytes());
                }
                Obj::Array(items) => {
                    count(&mut b, 0xA, items.len());
                    items.iter().for_each(|i| r(&mut b, *i));
                }
                Obj::Dict(pairs) => {
                    count(&mut b, 0xD, pairs.len());
                    pairs.iter().for_each(|(k, _)| r(&mut b, *k));
                    pairs.iter().for_each(|(_, v)| r(&mut b, *v));
                }
            }
        }
        let table = b.len();
        let offset_size = if table < 256 { 1 } else { 2 };
        for o in &offsets {
            b.extend_from_slice(&o.to_be_bytes()[8 - offset_size..]);
        }
        b.extend_from_slice(&[0; 6]);
        b.push(offset_size as u8);
        b.push(ref_size as u8);
        for v in [objs.len(), 0, table] {
            b.extend_from_slice(&(v as u64).to_be_bytes());
        }
        b
    }

    /// An Info.plist-like dictionary with `keys` string entries (values distinct strings).
    fn info_plist(keys: usize) -> Vec<Obj> {
        const WORDS: [&str; 40] = [
            "CFBundleIdentifier",
            "CFBundleName",
            "CFBundleVersion",
            "OSBundleRequired",
            "IOKitPersonalities",
            "IOClass",
            "IOProviderClass",
            "IOMatchCategory",
            "CFBundleExecutable",
            "CFBundlePackageType",
            "KEXT",
            "Root",
            "1.0.0",
            "com.example.driver",
            "Driver",
            "IOResources",
            "IOKit",
            "arm64e",
            "x86_64",
            "OSBundleLibraries",
            "com.apple.kpi.iokit",
            "com.apple.kpi.libkern",
            "19.0",
            "Console",
            "Local-Root",
            "Network-Root",
            "Safe Boot",
            "DTCompiler",
            "DTPlatformName",
            "macosx",
            "DTSDKName",
            "macosx14.0",
            "BuildMachineOSBuild",
            "23A344",
            "LSMinimumSystemVersion",
            "11.0",
            "NSHumanReadableCopyright",
            "Example Inc.",
            "CFBundleSignature",
            "????",
        ];
        let mut objs = vec![Obj::Dict(
            (0..keys).map(|i| (1 + 2 * i, 2 + 2 * i)).collect(),
        )];
        for i in 0..2 * keys {
            objs.push(Obj::Str(WORDS[i % WORDS.len()]));
        }
        objs
    }

    #[test]
    fn real_shapes_pass_and_parse() {
        // 3 keys (count in the marker), 20 keys (count as a following integer), 150 keys (301
        // objects: two-byte references and offsets).
        for (keys, ref_size) in [(3, 1), (20, 1), (150, 2)] {
            let b = bplist(&info_plist(keys), ref_size);
            assert_eq!(check(&b), Ok(()), "{keys} keys");
            let v: plist::Value = plist::from_bytes(&b).unwrap();
            let d = v.as_dictionary().unwrap();
            assert_eq!(
                d.len(),
                keys.min(20),
                "{keys} keys (repeated words collapse past 20)"
            );
            assert_eq!(
                d.get("CFBundleIdentifier").and_then(|v| v.as_string()),
                Some("CFBundleName")
            );
        }
    }

    /// `outer` references to one array of `inner` references to one string: 1 + outer * (1 + inner)
    /// objects when expanded.
    fn shared(outer: usize, inner: usize) -> Vec<u8> {
        bplist(
            &[
                Obj::Array(vec![1; outer]),
                Obj::Array(vec![2; inner]),
                Obj::Str("x"),
            ],
            1,
        )
    }

    #[test]
    fn the_expansion_bound_is_exact() {
        // 1 + 369 * 271 = 100,000: allowed. 1 + 1000 * 100 = 100,001: refused.
        assert_eq!(check(&shared(369, 270)), Ok(()));
        assert!(plist::from_bytes::<plist::Value>(&shared(369, 270)).is_ok());
        assert_eq!(
            check(&shared(1000, 99)),
            Err(PlistRefused(
                "binary plist expands to more than 100000 objects".to_string()
            ))
        );
    }

    fn with_trailer(mut b: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
        let t = b.len() - 32;
        b[t + at..t + at + value.len()].copy_from_slice(value);
        b
    }

    #[test]
    fn every_inconsistent_trailer_field_is_refused() {
        let good = bplist(&info_plist(3), 1);
        let len = good.len() as u64;
        let inconsistent = Err(PlistRefused(
            "binary plist trailer is inconsistent".to_string(),
        ));
        for (at, value) in [
            (6, vec![0]),                          // offset size 0
            (6, vec![9]),                          // offset size 9
            (7, vec![0]),                          // reference size 0
            (7, vec![9]),                          // reference size 9
            (8, 0u64.to_be_bytes().to_vec()),      // no objects
            (8, (len + 1).to_be_bytes().to_vec()), // more objects than bytes
            (16, 7u64.to_be_bytes().to_vec()),     // top object past the last
        ] {
            assert_eq!(
                check(&with_trailer(good.clone(), at, &value)),
                inconsistent,
                "{at} {value:?}"
            );
        }
        // As many objects as bytes is not yet inconsistent: the offset table then runs out.
        assert_eq!(
            check(&with_trailer(good.clone(), 8, &len.to_be_bytes())),
            Err(PlistRefused(
                "binary plist offset table outside the file".to_string()
            ))
        );
        // The shortest file with a trailer is 40 bytes; it has no room for an object.
        let mut tiny = b"bplist00".to_vec();
        tiny.extend_from_slice(&[0; 32]);
        assert_eq!(check(&tiny), inconsistent);
        assert_eq!(
            check(&tiny[..39]),
            Err(PlistRefused("binary plist too short".to_string()))
        );
    }

    #[test]
    fn bad_references_and_counts_are_refused() {
        // A reference to object 3 of 3 (indexes run 0..=2).
        let b = bplist(&[Obj::Array(vec![1, 3]), Obj::Str("a"), Obj::Str("b")], 1);
        assert_eq!(
            check(&b),
            Err(PlistRefused("object reference out of range".to_string()))
        );
        // A container whose long count is not introduced by an integer marker.
        let mut b = bplist(&info_plist(20), 1);
        b[9] = 0x50;
        assert_eq!(check(&b), Err(PlistRefused("bad object count".to_string())));
        // A count whose references would need exactly the file's length: not yet too many, but
        // the references themselves run past the end.
        let mut b = bplist(&[Obj::Array(vec![1; 20]), Obj::Str("a")], 1);
        let n = b.len() as u16;
        b[10..12].copy_from_slice(&n.to_be_bytes());
        assert_eq!(
            check(&b),
            Err(PlistRefused("truncated object references".to_string()))
        );
        b[10..12].copy_from_slice(&(n + 1).to_be_bytes());
        assert_eq!(
            check(&b),
            Err(PlistRefused("object count exceeds the file".to_string()))
        );
        // A cycle: an array that contains itself.
        let b = bplist(&[Obj::Array(vec![0])], 1);
        assert_eq!(
            check(&b),
            Err(PlistRefused(
                "binary plist object graph has a cycle".to_string()
            ))
        );
    }

    /// `levels` nested arrays around one string, in XML.
    fn xml_nested(levels: usize) -> Vec<u8> {
        let mut x = String::from(
            r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>CFBundleIdentifier</key><string>com.example.deep</string><key>X</key>"#,
        );
        x.push_str(&"<array>".repeat(levels - 1));
        x.push_str("<string>x</string>");
        x.push_str(&"</array>".repeat(levels - 1));
        x.push_str("</dict></plist>");
        x.into_bytes()
    }

    #[test]
    fn nesting_is_bounded_in_every_plist_format_at_exactly_the_limit() {
        let refused = |r: Result<(), PlistRefused>| {
            assert!(
                r.as_ref().is_err_and(|e| e
                    .0
                    .contains(&format!("plist nests deeper than {MAX_DEPTH} levels"))),
                "{r:?}"
            )
        };
        // XML: the outer dictionary is level 1.
        assert_eq!(check(&xml_nested(MAX_DEPTH)), Ok(()));
        assert!(plist::from_bytes::<plist::Value>(&xml_nested(MAX_DEPTH)).is_ok());
        refused(check(&xml_nested(MAX_DEPTH + 1)));
        // Deep enough to overflow a parser's stack, well inside the 1 MiB file limit.
        let bomb = xml_nested(69_000);
        assert!(bomb.len() < 1 << 20);
        refused(check(&bomb));
        // Binary: a chain of arrays, each holding the next.
        let chain = |levels: usize| {
            let mut objs: Vec<Obj> = (1..levels).map(|i| Obj::Array(vec![i])).collect();
            objs.push(Obj::Array(vec![levels]));
            objs.push(Obj::Str("x"));
            bplist(&objs, 2)
        };
        assert_eq!(check(&chain(MAX_DEPTH)), Ok(()));
        refused(check(&chain(MAX_DEPTH + 1)));
        // ASCII (OpenStep), which the same parser accepts.
        let ascii = |levels: usize| format!("{}x{}", "(".repeat(levels), ")".repeat(levels));
        assert_eq!(check(ascii(MAX_DEPTH).as_bytes()), Ok(()));
        refused(check(ascii(MAX_DEPTH + 1).as_bytes()));
    }
}
