//! Snapshots on disk: a directory with a `state` file (the stream format:
//! profile, layout, state, end) and a sparse `memory` file (guest RAM, zero
//! pages left as holes) that a restore maps lazily.

use crate::pages::{RamRange, Scanner, PAGE, PAGES_PER_FRAME, PAGE_SIZE};
use crate::probe::ZeroProbe;
use crate::stream::{from_json, FrameReader, FrameWriter, Tag};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vm_memory::GuestMemory;

/// The state file in a snapshot directory.
pub const STATE_FILE: &str = "state";
/// The memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// The suffix of the files being written, renamed into place when complete.
const TMP_SUFFIX: &str = ".tmp";

/// Where one RAM range lives in the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRange {
    /// Guest physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset in the memory file.
    pub file_offset: u64,
}

/// A snapshot read back from disk (memory not read: map [`Snapshot::memory`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The ABI profile the state needs.
    pub profile: Value,
    /// The RAM ranges and where they are in the memory file.
    pub layout: Vec<SnapshotRange>,
    /// The device and vCPU state.
    pub state: Value,
    /// The memory file.
    pub memory: PathBuf,
}

/// What saving wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Pages written (non-zero).
    pub data_pages: u64,
    /// Zero pages left as holes.
    pub zero_pages: u64,
}

fn file_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::SnapshotFile {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Saves a snapshot of a paused VM into `dir` (created if missing).
///
/// Each file is written under a temporary name and renamed into place, so a
/// failed save leaves the files already in `dir` as they were, and a VM
/// restored from `dir` (whose RAM maps the old `memory` file) can save into
/// it: the old file lives on, unchanged, as long as it is mapped.
///
/// ```
/// use kvmkit_migration::{load_snapshot, save_snapshot, RamRange};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
/// let dir = std::env::temp_dir().join(format!("kvmkit-doc-snap-{}", std::process::id()));
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
/// mem.write_obj(0x55u8, GuestAddress(0x1000)).unwrap();
/// let ram = [RamRange::new(0, 0x4000)];
/// let stats = save_snapshot(&dir, &mem, &ram, &serde_json::json!({"arch": "x86_64"}), &serde_json::json!({}))?;
/// assert_eq!((stats.data_pages, stats.zero_pages), (1, 3));
/// let snap = load_snapshot(&dir)?;
/// assert_eq!(snap.layout[0].file_offset, 0);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), kvmkit_migration::Error>(())
/// ```
pub fn save_snapshot<M: GuestMemory>(
    dir: &Path,
    mem: &M,
    ram: &[RamRange],
    profile: &Value,
    state: &Value,
) -> Result<SnapshotStats> {
    std::fs::create_dir_all(dir).map_err(file_err("creating", dir))?;
    let mem_path = dir.join(format!("{MEMORY_FILE}{TMP_SUFFIX}"));
    let state_path = dir.join(format!("{STATE_FILE}{TMP_SUFFIX}"));
    let res = write_snapshot_files(&mem_path, &state_path, mem, ram, profile, state);
    if res.is_err() {
        let _ = std::fs::remove_file(&mem_path);
        let _ = std::fs::remove_file(&state_path);
    }
    let stats = res?;
    // Each file is complete once renamed; a crash between the two renames
    // would pair the new memory with the old state (not atomic as a pair).
    for (tmp, name) in [(&mem_path, MEMORY_FILE), (&state_path, STATE_FILE)] {
        std::fs::rename(tmp, dir.join(name)).map_err(file_err("renaming", tmp))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err("syncing", dir))?;
    Ok(stats)
}

/// Writes the memory file and the state file of a snapshot at these paths.
fn write_snapshot_files<M: GuestMemory>(
    mem_path: &Path,
    state_path: &Path,
    mem: &M,
    ram: &[RamRange],
    profile: &Value,
    state: &Value,
) -> Result<SnapshotStats> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(mem_path)
        .map_err(file_err("creating", mem_path))?;
    let mut layout = Vec::with_capacity(ram.len());
    let mut offset = 0u64;
    let mut stats = SnapshotStats::default();
    let probe = ZeroProbe::new();
    let mut scanner = Scanner::new(&probe);
    for r in ram {
        layout.push(SnapshotRange {
            gpa: r.gpa,
            len: r.len,
            file_offset: offset,
        });
        let mut done = 0u64;
        while done < r.len {
            let n = (r.len - done).min(PAGES_PER_FRAME * PAGE_SIZE);
            let pages = usize::try_from(n / PAGE_SIZE).unwrap_or(0);
            let (chunk, zero) = scanner.read(mem, r.gpa + done, pages, r.end())?;
            // Runs of data pages are written with one call each; zero pages
            // stay holes.
            let mut i = 0;
            while i < pages {
                let z = zero[i];
                let run = zero[i..].iter().take_while(|&&x| x == z).count();
                if z {
                    stats.zero_pages += run as u64;
                } else {
                    stats.data_pages += run as u64;
                    file.write_all_at(
                        &chunk[i * PAGE..(i + run) * PAGE],
                        offset + done + i as u64 * PAGE_SIZE,
                    )
                    .map_err(file_err("writing", mem_path))?;
                }
                i += run;
            }
            done += n;
        }
        offset += r.len;
    }
    // Holes for the zero pages at the end too.
    file.set_len(offset).map_err(file_err("sizing", mem_path))?;
    file.sync_all().map_err(file_err("syncing", mem_path))?;

    let sf = File::create(state_path).map_err(file_err("creating", state_path))?;
    let mut w = FrameWriter::new(BufWriter::new(sf))?;
    w.json(Tag::Profile, "PROFILE", profile)?;
    w.json(Tag::Layout, "LAYOUT", &layout)?;
    w.json(Tag::State, "STATE", state)?;
    w.frame(Tag::End, &[])?;
    w.flush()?;
    w.into_inner()
        .into_inner()
        .map_err(|e| Error::SnapshotFile {
            op: "writing",
            path: state_path.to_path_buf(),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(file_err("syncing", state_path))?;
    Ok(stats)
}

/// Reads the state file of the snapshot in `dir` and checks that the memory
/// file covers its layout. Guest memory is not read.
pub fn load_snapshot(dir: &Path) -> Result<Snapshot> {
    let state_path = dir.join(STATE_FILE);
    let f = File::open(&state_path).map_err(file_err("opening", &state_path))?;
    let mut r = FrameReader::new(BufReader::new(f))?;
    let profile: Value = from_json(&r.expect(Tag::Profile, "the PROFILE frame")?, "PROFILE")?;
    let layout: Vec<SnapshotRange> =
        from_json(&r.expect(Tag::Layout, "the LAYOUT frame")?, "LAYOUT")?;
    let state: Value = from_json(&r.expect(Tag::State, "the STATE frame")?, "STATE")?;
    r.expect(Tag::End, "the END frame")?;
    let memory = dir.join(MEMORY_FILE);
    let size = std::fs::metadata(&memory)
        .map_err(file_err("opening", &memory))?
        .len();
    for l in &layout {
        let end = l.file_offset.checked_add(l.len);
        if end.is_none_or(|e| e > size) || l.len % PAGE_SIZE != 0 || l.gpa % PAGE_SIZE != 0 {
            return Err(Error::Layout {
                stream: format!("{l:x?}"),
                local: format!("a memory file of {size:#x} bytes"),
            });
        }
    }
    Ok(Snapshot {
        profile,
        layout,
        state,
        memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::tempdir::TempDir;

    #[test]
    fn memory_file_is_sparse_and_exact() {
        let dir = TempDir::new().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x20_0000), 0x40_0000),
        ])
        .unwrap();
        mem.write_obj(0xabcdu32, GuestAddress(0x5000)).unwrap();
        mem.write_obj(0x1234u32, GuestAddress(0x5f_f000)).unwrap();
        let ram = [
            RamRange::new(0, 0x10_0000),
            RamRange::new(0x20_0000, 0x40_0000),
        ];
        let stats = save_snapshot(
            dir.as_path(),
            &mem,
            &ram,
            &serde_json::json!({"arch": "test"}),
            &serde_json::json!({"vcpus": [1, 2]}),
        )
        .unwrap();
        assert_eq!(stats.data_pages, 2);
        assert_eq!(stats.zero_pages, 0x500 - 2);
        let snap = load_snapshot(dir.as_path()).unwrap();
        assert_eq!(snap.state["vcpus"][1], 2);
        assert_eq!(snap.layout[1].file_offset, 0x10_0000);
        let meta = std::fs::metadata(&snap.memory).unwrap();
        assert_eq!(meta.len(), 0x50_0000);
        use std::os::unix::fs::MetadataExt;
        // Two data pages, the rest holes (allow filesystem block rounding).
        assert!(meta.blocks() * 512 <= 64 * 1024, "{} blocks", meta.blocks());
        let f = File::open(&snap.memory).unwrap();
        let mut w = [0u8; 4];
        f.read_exact_at(&mut w, 0x10_0000 + 0x3f_f000).unwrap();
        assert_eq!(u32::from_le_bytes(w), 0x1234);
        f.read_exact_at(&mut w, 0x5000).unwrap();
        assert_eq!(u32::from_le_bytes(w), 0xabcd);
    }

    #[test]
    fn saving_over_the_mapped_snapshot_keeps_the_mapping() {
        // A VM restored from `dir` runs on a mapping of `dir/memory` and
        // saves into `dir` again: the save reads that very mapping.
        let dir = TempDir::new().unwrap();
        let ram = [RamRange::new(0, 0x4000)];
        let j = serde_json::json!({});
        let first = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        first.write_obj(0x1111u64, GuestAddress(0x1000)).unwrap();
        save_snapshot(dir.as_path(), &first, &ram, &j, &j).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.as_path().join(MEMORY_FILE))
            .unwrap();
        let mapped = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            0x4000,
            Some(vm_memory::FileOffset::new(file, 0)),
        )])
        .unwrap();
        assert_eq!(
            mapped.read_obj::<u64>(GuestAddress(0x1000)).unwrap(),
            0x1111
        );
        mapped.write_obj(0x2222u64, GuestAddress(0x3000)).unwrap();
        let stats = save_snapshot(dir.as_path(), &mapped, &ram, &j, &j).unwrap();
        assert_eq!((stats.data_pages, stats.zero_pages), (2, 2));
        // The mapping still reads its own contents (no SIGBUS, no zeroes)...
        assert_eq!(
            mapped.read_obj::<u64>(GuestAddress(0x1000)).unwrap(),
            0x1111
        );
        // ... and the new files hold them; no temporary file is left.
        let f = File::open(dir.as_path().join(MEMORY_FILE)).unwrap();
        let mut w = [0u8; 8];
        f.read_exact_at(&mut w, 0x3000).unwrap();
        assert_eq!(u64::from_le_bytes(w), 0x2222);
        f.read_exact_at(&mut w, 0x1000).unwrap();
        assert_eq!(u64::from_le_bytes(w), 0x1111);
        let mut names: Vec<String> = std::fs::read_dir(dir.as_path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [MEMORY_FILE, STATE_FILE]);
        load_snapshot(dir.as_path()).unwrap();
    }

    #[test]
    fn a_failed_save_leaves_the_old_snapshot() {
        let dir = TempDir::new().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        let j = serde_json::json!({"n": 1});
        save_snapshot(dir.as_path(), &mem, &[RamRange::new(0, 0x2000)], &j, &j).unwrap();
        // RAM outside the memory: the save fails while reading it.
        let e =
            save_snapshot(dir.as_path(), &mem, &[RamRange::new(0, 0x3000)], &j, &j).unwrap_err();
        assert!(matches!(e, Error::GuestMemory { .. }), "{e}");
        let snap = load_snapshot(dir.as_path()).unwrap();
        assert_eq!(snap.layout.len(), 1);
        assert_eq!(snap.layout[0].len, 0x2000);
        assert_eq!(
            std::fs::read_dir(dir.as_path()).unwrap().count(),
            2,
            "no temporary file left"
        );
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let dir = TempDir::new().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        let ram = [RamRange::new(0, 0x2000)];
        let j = serde_json::json!({});
        save_snapshot(dir.as_path(), &mem, &ram, &j, &j).unwrap();
        let state = dir.as_path().join(STATE_FILE);
        let good = std::fs::read(&state).unwrap();
        // Truncated state file.
        std::fs::write(&state, &good[..good.len() - 3]).unwrap();
        let e = load_snapshot(dir.as_path()).unwrap_err();
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
        // Corrupted byte.
        let mut bad = good.clone();
        bad[30] ^= 0x40;
        std::fs::write(&state, &bad).unwrap();
        assert!(load_snapshot(dir.as_path()).is_err());
        // Memory file shorter than the layout.
        std::fs::write(&state, &good).unwrap();
        let memf = dir.as_path().join(MEMORY_FILE);
        OpenOptions::new()
            .write(true)
            .open(&memf)
            .unwrap()
            .set_len(0x1000)
            .unwrap();
        let e = load_snapshot(dir.as_path()).unwrap_err();
        assert!(matches!(e, Error::Layout { .. }), "{e}");
        // Missing directory.
        let e = load_snapshot(&dir.as_path().join("nope")).unwrap_err();
        assert!(
            e.to_string().starts_with("opening the snapshot file"),
            "{e}"
        );
    }
}
