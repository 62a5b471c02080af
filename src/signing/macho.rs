//! Mach-O containers: universal (fat) headers, 32- and 64-bit, are read here (goblin reads only the
//! 32-bit form); each thin slice is parsed with goblin to find `LC_CODE_SIGNATURE`.

use goblin::mach::load_command::CommandVariant;
use goblin::mach::MachO;

const FAT_MAGIC: u32 = 0xcafe_babe;
const FAT_MAGIC_64: u32 = 0xcafe_babf;
/// More architectures than any real binary carries; a larger count is corruption.
const MAX_FAT_ARCHES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachError {
    #[error("not a Mach-O file (magic {0:#010x})")]
    NotMachO(u32),
    #[error("file too short for a Mach-O header")]
    Truncated,
    #[error("universal header: {0}")]
    Fat(String),
    #[error("{arch} slice: {message}")]
    Slice { arch: String, message: String },
}

/// One architecture of an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice<'a> {
    pub arch: String,
    pub filetype: u32,
    /// The bytes `LC_CODE_SIGNATURE` points at, if the slice is signed.
    pub signature: Option<&'a [u8]>,
}

pub fn arch_name(cputype: u32, cpusubtype: u32) -> String {
    match (cputype, cpusubtype & 0x00ff_ffff) {
        (0x0100_0007, _) => "x86_64".into(),
        (0x0000_0007, _) => "i386".into(),
        (0x0100_000c, 2) => "arm64e".into(),
        (0x0100_000c, _) => "arm64".into(),
        (0x0200_000c, _) => "arm64_32".into(),
        (0x0000_000c, _) => "arm".into(),
        (t, s) => format!("cpu{t:#x}/{s:#x}"),
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(s.try_into().ok()?))
}

/// Every slice of a thin or universal Mach-O file.
pub fn slices(data: &[u8]) -> Result<Vec<Slice<'_>>, MachError> {
    let magic = be32(data, 0).ok_or(MachError::Truncated)?;
    if magic != FAT_MAGIC && magic != FAT_MAGIC_64 {
        return Ok(vec![thin(data, None)?]);
    }
    let n = be32(data, 4).ok_or(MachError::Truncated)? as usize;
    if n == 0 || n > MAX_FAT_ARCHES {
        return Err(MachError::Fat(format!("{n} architectures")));
    }
    let entry = if magic == FAT_MAGIC_64 { 32 } else { 20 };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let at = 8 + i * entry;
        let fat_err = || MachError::Fat(format!("entry {i} is truncated"));
        let cputype = be32(data, at).ok_or_else(fat_err)?;
        let cpusubtype = be32(data, at + 4).ok_or_else(fat_err)?;
        let (offset, size) = if magic == FAT_MAGIC_64 {
            (
                be64(data, at + 8).ok_or_else(fat_err)?,
                be64(data, at + 16).ok_or_else(fat_err)?,
            )
        } else {
            (
                u64::from(be32(data, at + 8).ok_or_else(fat_err)?),
                u64::from(be32(data, at + 12).ok_or_else(fat_err)?),
            )
        };
        let arch = arch_name(cputype, cpusubtype);
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(o, s)| Some(o..o.checked_add(s)?))
            .filter(|r| r.start >= 8 + n * entry && r.end <= data.len())
            .ok_or_else(|| {
                MachError::Fat(format!(
                    "{arch} slice at {offset}+{size} lies outside the file"
                ))
            })?;
        out.push(thin(&data[range], Some(arch))?);
    }
    Ok(out)
}

fn thin<'a>(data: &'a [u8], fat_arch: Option<String>) -> Result<Slice<'a>, MachError> {
    let m = MachO::parse(data, 0).map_err(|e| match be32(data, 0) {
        Some(magic) if !matches!(magic, 0xfeedface | 0xfeedfacf | 0xcefaedfe | 0xcffaedfe) => {
            MachError::NotMachO(magic)
        }
        _ => MachError::Slice {
            arch: fat_arch.clone().unwrap_or_else(|| "thin".into()),
            message: e.to_string(),
        },
    })?;
    let arch = fat_arch.unwrap_or_else(|| arch_name(m.header.cputype, m.header.cpusubtype));
    let mut signature = None;
    for lc in &m.load_commands {
        if let CommandVariant::CodeSignature(cs) = &lc.command {
            let start = cs.dataoff as usize;
            let bytes = start
                .checked_add(cs.datasize as usize)
                .and_then(|end| data.get(start..end))
                .ok_or_else(|| MachError::Slice {
                    arch: arch.clone(),
                    message: format!(
                        "code signature at {}+{} lies outside the slice",
                        cs.dataoff, cs.datasize
                    ),
                })?;
            signature = Some(bytes);
        }
    }
    Ok(Slice {
        arch,
        filetype: m.header.filetype,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat(n: u32) -> Vec<u8> {
        let mut b = FAT_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&n.to_be_bytes());
        b
    }

    /// A thin x86_64 kext executable (developer-signed fixture).
    const THIN: &[u8] =
        include_bytes!("../../tests/fixtures/kexts/Developer.kext/Contents/MacOS/Developer");

    /// A universal file with one entry claiming (`cputype`, `cpusubtype`) for `slice`, placed at
    /// `offset` (at least the end of the header table: 28).
    fn wrap(cputype: u32, cpusubtype: u32, offset: u32, slice: &[u8]) -> Vec<u8> {
        let mut b = fat(1);
        for v in [cputype, cpusubtype, offset, slice.len() as u32, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.resize(offset as usize, 0);
        b.extend_from_slice(slice);
        b
    }

    #[test]
    fn each_entry_is_read_from_its_own_fields() {
        // The entry's subtype names the slice (arm64e), not the thin header inside it.
        let file = wrap(0x0100_000c, 2, 4096, THIN);
        let s = slices(&file).unwrap();
        assert_eq!(s[0].arch, "arm64e");
        assert!(s[0].signature.is_some());
    }

    #[test]
    fn a_slice_may_start_right_after_the_header_table_and_not_inside_it() {
        assert_eq!(
            slices(&wrap(0x0100_0007, 3, 28, THIN)).unwrap()[0].arch,
            "x86_64"
        );
        for inside in [8, 20, 27] {
            match slices(&wrap(0x0100_0007, 3, inside, THIN)) {
                Err(MachError::Fat(m)) => assert!(m.contains("lies outside the file"), "{m}"),
                other => panic!("{inside}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_truncated_slice_is_a_slice_error_and_foreign_bytes_are_not_mach_o() {
        match slices(&wrap(0x0100_0007, 3, 4096, &THIN[..64])) {
            Err(MachError::Slice { arch, .. }) => assert_eq!(arch, "x86_64"),
            other => panic!("{other:?}"),
        }
        match slices(&wrap(0x0100_0007, 3, 4096, b"#!/bin/sh\necho not a kext\n")) {
            Err(MachError::NotMachO(magic)) => assert_eq!(magic, 0x2321_2f62),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn architecture_counts_are_bounded_at_both_ends() {
        let count_error = |n: u32| match slices(&fat(n)) {
            Err(MachError::Fat(m)) => m,
            other => panic!("{n}: {other:?}"),
        };
        assert_eq!(count_error(0), "0 architectures");
        assert_eq!(count_error(65), "65 architectures");
        assert_eq!(count_error(u32::MAX), "4294967295 architectures");
        // 1 and 64 are plausible counts: what fails then is the missing entry.
        assert_eq!(count_error(1), "entry 0 is truncated");
        assert_eq!(count_error(64), "entry 0 is truncated");
    }

    #[test]
    fn architectures_are_named_with_capability_bits_masked() {
        // arm64e binaries set CPU_SUBTYPE_PTRAUTH_ABI (0x80000000) in the subtype.
        assert_eq!(arch_name(0x0100_000c, 0x8000_0002), "arm64e");
        assert_eq!(arch_name(0x0100_000c, 0x0000_0002), "arm64e");
        assert_eq!(arch_name(0x0100_000c, 0), "arm64");
        // x86_64 with CPU_SUBTYPE_LIB64 (0x80000000) set, as older dylibs have.
        assert_eq!(arch_name(0x0100_0007, 0x8000_0003), "x86_64");
        assert_eq!(arch_name(0x0000_0012, 0x0100_0005), "cpu0x12/0x5");
    }
}
