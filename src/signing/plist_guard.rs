//! A binary plist can reference one object from many places, so a few hundred bytes can describe a
//! structure with billions of nodes (a "plist bomb"), and a parser walks all of them. Before parsing,
//! this walks the object graph once, with memoised sizes, and rejects cycles and expansions past a
//! bound. XML plists are bounded by the file-size limit alone.

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

pub fn check(b: &[u8]) -> Result<(), String> {
    if !b.starts_with(b"bplist00") {
        return Ok(());
    }
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
