#![doc = include_str!("../README.md")]

use std::io;
use std::path::Path;

/// The guest image: an ELF64 x86_64 `ET_EXEC`, linked at [`LOAD_ADDR`],
/// bootable through the 64-bit Linux boot protocol (`e_entry`, `%rsi` =
/// `struct boot_params`) or through PVH (the `Xen` /
/// `XEN_ELFNOTE_PHYS32_ENTRY` note, `%ebx` = `struct hvm_start_info`).
///
/// ```
/// let elf = kvmkit_test_guest::TEST_GUEST_ELF;
/// assert_eq!(&elf[..4], b"\x7fELF");
/// assert_eq!(elf[4], 2, "ELFCLASS64");
/// // The PVH entry note: namesz 4, descsz 4, type 18, name "Xen\0".
/// let note = [4u32.to_le_bytes(), 4u32.to_le_bytes(), 18u32.to_le_bytes(), *b"Xen\0"].concat();
/// assert!(elf.windows(note.len()).any(|w| w == note));
/// ```
pub static TEST_GUEST_ELF: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kvmkit-test-guest.elf"));

/// The guest's version, printed in its banner after [`BANNER`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Start of the first line the guest prints on COM1, followed by a space,
/// [`VERSION`] and the boot path, e.g.
/// `kvmkit test guest 0.1.0 (boot: pvh)` or `... (boot: linux64)`.
///
/// ```
/// use kvmkit_test_guest::{BANNER, VERSION};
/// let line = format!("{BANNER} {VERSION} (boot: pvh)");
/// assert!(line.starts_with("kvmkit test guest "));
/// ```
pub const BANNER: &str = "kvmkit test guest";

/// The shell prompt (no newline follows it).  Commands run from
/// [`AUTORUN_PARAM`] are echoed after the prompt as if they were typed.
pub const PROMPT: &str = "kvmkit> ";

/// The command-line parameter that runs shell commands right after boot:
/// `kvmkit.autorun=CMD[,CMD...]`.  See [`autorun`].
pub const AUTORUN_PARAM: &str = "kvmkit.autorun=";

/// Guest-physical (== virtual) address the ELF is linked and loaded at.
pub const LOAD_ADDR: u64 = 0x10_0000;

/// Guest-physical address of the real-mode AP start-up trampoline (one
/// page, written by the guest before it sends the SIPIs).
pub const TRAMPOLINE_ADDR: u64 = 0x8000;

/// The SIPI vector the guest sends (`TRAMPOLINE_ADDR >> 12`).
pub const SIPI_VECTOR: u8 = 0x08;

/// Guest-physical address of the mailbox page: four little-endian `u64`s
/// at offsets 0 ([`DIRTY_COUNTER_ADDR`]), 8 ([`MAILBOX_MAGIC_ADDR`]),
/// 16 ([`MAILBOX_CPUS_ADDR`]) and 24 ([`MAILBOX_DIRTY_PAGES_ADDR`]).
pub const MAILBOX_ADDR: u64 = 0x9000;

/// Guest-physical address of the `u64` counter that the `dirty` command
/// increments once per page write and `count` prints.  Zeroed at boot.
pub const DIRTY_COUNTER_ADDR: u64 = MAILBOX_ADDR;

/// Guest-physical address of a `u64` that holds [`MAILBOX_MAGIC`] once the
/// guest has finished booting (before the first prompt).
pub const MAILBOX_MAGIC_ADDR: u64 = MAILBOX_ADDR + 8;

/// The value at [`MAILBOX_MAGIC_ADDR`] once the guest is ready: the bytes
/// `b"kvmkitTG"` read as a little-endian `u64`.
///
/// ```
/// assert_eq!(kvmkit_test_guest::MAILBOX_MAGIC.to_le_bytes(), *b"kvmkitTG");
/// ```
pub const MAILBOX_MAGIC: u64 = u64::from_le_bytes(*b"kvmkitTG");

/// Guest-physical address of a `u64`: the number of CPUs online after the
/// AP bring-up.
pub const MAILBOX_CPUS_ADDR: u64 = MAILBOX_ADDR + 16;

/// Guest-physical address of a `u64`: the page count of the latest
/// `dirty` run.
pub const MAILBOX_DIRTY_PAGES_ADDR: u64 = MAILBOX_ADDR + 24;

/// Guest-physical address of the buffer the `dirty` command writes: page
/// `i` gets the counter at offsets 0 and 2048.  It must be usable RAM.
pub const DIRTY_BUFFER_ADDR: u64 = 0x100_0000;

/// Pages `dirty` writes when no count is given.
pub const DIRTY_DEFAULT_PAGES: u64 = 256;

/// The most CPUs the guest brings up (the BSP included).
pub const MAX_CPUS: usize = 64;

/// The I/O port of the UART the guest uses (COM1).
pub const COM1_PORT: u16 = 0x3f8;

/// The command-line parameter that keeps the guest fully polled (no
/// interrupts are enabled, no `hlt` waits), as before issue #4.
pub const NOIRQ_PARAM: &str = "kvmkit.noirq";

/// The interrupt vectors the guest programs (IOAPIC redirection entries
/// and the local APIC timer): COM1's receive interrupt.
pub const VECTOR_COM1: u8 = 0x24;

/// The vector of the first virtio-mmio device (device `i` gets
/// `VECTOR_VIRTIO_BASE + i`, in the order the `virtio` command lists them).
pub const VECTOR_VIRTIO_BASE: u8 = 0x40;

/// The vector of the ACPI SCI (the FADT's `SCI_INT`, routed through the
/// MADT's override): the guest enables the fixed-feature power button on
/// it when the FADT describes one, and powers off when it is pressed.
pub const VECTOR_SCI: u8 = 0x29;

/// The line the guest prints when the ACPI power button is pressed, just
/// before it powers off through ACPI S5.
///
/// ```
/// assert_eq!(kvmkit_test_guest::POWER_BUTTON_LINE, "acpi: power button");
/// ```
pub const POWER_BUTTON_LINE: &str = "acpi: power button";

/// The local APIC timer vector (periodic, nominally every
/// [`TIMER_TICK_MS`] ms; it bounds every `sti; hlt` wait).
pub const VECTOR_TIMER: u8 = 0xf0;

/// The nominal local APIC timer period: count 625000 at divide-by-16 with
/// the 1 GHz APIC clock of KVM and QEMU.
pub const TIMER_TICK_MS: u64 = 10;

/// The ethertype of the frames `net send` broadcasts (IEEE 802 local
/// experimental ethertype 1).
pub const VIRTIO_NET_ETHERTYPE: u16 = 0x88b5;

/// Guest-physical address of the virtio queues and buffers: one
/// [`VIRTIO_SLOT_SIZE`] slot per device, at most [`VIRTIO_MAX_DEVS`]
/// (see the README for the layout inside a slot).
pub const VIRTIO_AREA_ADDR: u64 = 0x1c_0000;

/// Size of one device's slot in the virtio area.
pub const VIRTIO_SLOT_SIZE: u64 = 0x8000;

/// The most virtio-mmio devices the guest drives.
pub const VIRTIO_MAX_DEVS: usize = 8;

/// The largest virtqueue the guest sets up (it uses
/// `min(QueueNumMax, VIRTIO_QUEUE_SIZE)`, rounded down to a power of two).
pub const VIRTIO_QUEUE_SIZE: u16 = 16;

/// Builds a `virtio_mmio.device=` command-line entry, as Linux reads it:
/// size, base address and interrupt (ISA IRQ or GSI).
///
/// ```
/// assert_eq!(
///     kvmkit_test_guest::virtio_mmio_param(0x1000, 0xd000_0000, 5),
///     "virtio_mmio.device=4K@0xd0000000:5"
/// );
/// ```
pub fn virtio_mmio_param(size: u64, base: u64, irq: u32) -> String {
    let size = if size % 1024 == 0 && size > 0 {
        format!("{}K", size / 1024)
    } else {
        format!("{size:#x}")
    };
    format!("virtio_mmio.device={size}@{base:#x}:{irq}")
}

/// Writes [`TEST_GUEST_ELF`] to `path` (e.g. to hand it to QEMU).
///
/// ```no_run
/// kvmkit_test_guest::write_elf("/tmp/kvmkit-test-guest.elf")?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// Any error from creating or writing the file.
pub fn write_elf<P: AsRef<Path>>(path: P) -> io::Result<()> {
    std::fs::write(path, TEST_GUEST_ELF)
}

/// Builds the `kvmkit.autorun=` parameter for a list of shell commands.
/// Spaces inside a command become `:`, which the guest turns back into
/// spaces; commands are separated by `,` (so they must not contain one).
///
/// ```
/// let p = kvmkit_test_guest::autorun(&["echo hi", "cpus", "poweroff"]);
/// assert_eq!(p, "kvmkit.autorun=echo:hi,cpus,poweroff");
/// ```
pub fn autorun(commands: &[&str]) -> String {
    let cmds: Vec<String> = commands.iter().map(|c| c.replace(' ', ":")).collect();
    format!("{AUTORUN_PARAM}{}", cmds.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PT_LOAD: u32 = 1;
    const PT_NOTE: u32 = 4;
    const MIB: u64 = 1 << 20;

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    fn usize_of(v: u64) -> usize {
        usize::try_from(v).unwrap()
    }

    #[derive(Debug, Clone, Copy)]
    struct Phdr {
        p_type: u32,
        offset: u64,
        vaddr: u64,
        paddr: u64,
        filesz: u64,
        memsz: u64,
        align: u64,
    }

    fn phdrs(elf: &[u8]) -> Vec<Phdr> {
        let phoff = usize_of(u64_at(elf, 0x20));
        let phentsize = usize::from(u16_at(elf, 0x36));
        let phnum = usize::from(u16_at(elf, 0x38));
        assert_eq!(phentsize, 56);
        (0..phnum)
            .map(|i| {
                let o = phoff + i * phentsize;
                Phdr {
                    p_type: u32_at(elf, o),
                    offset: u64_at(elf, o + 8),
                    vaddr: u64_at(elf, o + 16),
                    paddr: u64_at(elf, o + 24),
                    filesz: u64_at(elf, o + 32),
                    memsz: u64_at(elf, o + 40),
                    align: u64_at(elf, o + 48),
                }
            })
            .collect()
    }

    fn loads(elf: &[u8]) -> Vec<Phdr> {
        phdrs(elf)
            .into_iter()
            .filter(|p| p.p_type == PT_LOAD)
            .collect()
    }

    fn in_loaded_code(elf: &[u8], addr: u64) -> bool {
        loads(elf)
            .iter()
            .any(|p| addr >= p.paddr && addr < p.paddr + p.filesz)
    }

    /// All (name, type, desc) notes of all PT_NOTE segments.
    fn notes(elf: &[u8]) -> Vec<(Vec<u8>, u32, Vec<u8>)> {
        let mut out = Vec::new();
        for p in phdrs(elf).iter().filter(|p| p.p_type == PT_NOTE) {
            let seg = &elf[usize_of(p.offset)..usize_of(p.offset + p.filesz)];
            let mut o = 0;
            while o + 12 <= seg.len() {
                let namesz = usize_of(u64::from(u32_at(seg, o)));
                let descsz = usize_of(u64::from(u32_at(seg, o + 4)));
                let ty = u32_at(seg, o + 8);
                let name_at = o + 12;
                let desc_at = name_at + namesz.next_multiple_of(4);
                let name = seg[name_at..name_at + namesz].to_vec();
                let desc = seg[desc_at..desc_at + descsz].to_vec();
                out.push((name, ty, desc));
                o = desc_at + descsz.next_multiple_of(4);
            }
        }
        out
    }

    fn pvh_entry(elf: &[u8]) -> Option<u32> {
        notes(elf)
            .into_iter()
            .find(|(name, ty, _)| name == b"Xen\0" && *ty == 18)
            .map(|(_, _, desc)| u32_at(&desc, 0))
    }

    #[test]
    fn elf64_x86_64_exec() {
        let elf = TEST_GUEST_ELF;
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "ELFCLASS64");
        assert_eq!(elf[5], 1, "little endian");
        assert_eq!(u16_at(elf, 0x10), 2, "ET_EXEC");
        assert_eq!(u16_at(elf, 0x12), 62, "EM_X86_64");
    }

    #[test]
    fn entry_inside_loaded_segment() {
        let entry = u64_at(TEST_GUEST_ELF, 0x18);
        assert!(entry >= LOAD_ADDR);
        assert!(in_loaded_code(TEST_GUEST_ELF, entry), "e_entry {entry:#x}");
    }

    #[test]
    fn pvh_note_present_and_entry_loaded() {
        let entry = pvh_entry(TEST_GUEST_ELF).expect("no Xen PHYS32_ENTRY note");
        assert!(
            in_loaded_code(TEST_GUEST_ELF, u64::from(entry)),
            "pvh entry {entry:#x}"
        );
        assert_ne!(u64::from(entry), u64_at(TEST_GUEST_ELF, 0x18));
    }

    #[test]
    fn single_note_segment_aligned_for_loaders() {
        // linux-loader pads note fields to p_align and keeps the result of
        // the last PT_NOTE: exactly one, aligned to 4.
        let notes: Vec<Phdr> = phdrs(TEST_GUEST_ELF)
            .into_iter()
            .filter(|p| p.p_type == PT_NOTE)
            .collect();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].align, 4);
    }

    #[test]
    fn load_segments_between_1_and_16_mib() {
        let loads = loads(TEST_GUEST_ELF);
        assert!(!loads.is_empty());
        for p in loads {
            assert_eq!(p.vaddr, p.paddr, "identity linked");
            assert!(p.paddr >= MIB, "{p:?}");
            assert!(p.paddr + p.memsz <= 16 * MIB, "{p:?}");
            assert!(p.filesz <= p.memsz);
            assert!(p.offset + p.filesz <= TEST_GUEST_ELF.len() as u64);
        }
        let lowest = loads_min_paddr(TEST_GUEST_ELF);
        assert_eq!(lowest, LOAD_ADDR);
    }

    fn loads_min_paddr(elf: &[u8]) -> u64 {
        loads(elf).iter().map(|p| p.paddr).min().unwrap()
    }

    #[test]
    fn image_does_not_overlap_the_dirty_buffer() {
        let end = loads(TEST_GUEST_ELF)
            .iter()
            .map(|p| p.paddr + p.memsz)
            .max()
            .unwrap();
        assert!(end <= DIRTY_BUFFER_ADDR);
    }

    const _: () = assert!(TRAMPOLINE_ADDR + 0x1000 <= MAILBOX_ADDR);
    const _: () = assert!(MAILBOX_ADDR + 0x1000 <= LOAD_ADDR);

    #[test]
    fn banner_and_prompt_are_in_the_image() {
        let banner = format!("{BANNER} {VERSION} (boot: ");
        let has = |s: &[u8]| TEST_GUEST_ELF.windows(s.len()).any(|w| w == s);
        assert!(has(banner.as_bytes()));
        assert!(has(PROMPT.as_bytes()));
        assert!(has(AUTORUN_PARAM.as_bytes()));
    }

    /// The C side's layout.h must agree with the constants above.
    #[test]
    fn layout_h_matches_constants() {
        let h = include_str!("../guest/layout.h");
        let define = |name: &str| -> u64 {
            let line = h
                .lines()
                .find(|l| l.split_whitespace().take(2).eq(["#define", name]))
                .unwrap_or_else(|| panic!("{name} not in layout.h"));
            let v = line.split_whitespace().nth(2).unwrap();
            let v = v.trim_end_matches("ULL");
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
                None => v.parse().unwrap(),
            }
        };
        assert_eq!(define("LOAD_ADDR"), LOAD_ADDR);
        assert_eq!(define("TRAMPOLINE_ADDR"), TRAMPOLINE_ADDR);
        assert_eq!(TRAMPOLINE_ADDR >> 12, u64::from(SIPI_VECTOR));
        assert_eq!(define("MAILBOX_ADDR"), MAILBOX_ADDR);
        assert_eq!(define("MAILBOX_MAGIC_VALUE"), MAILBOX_MAGIC);
        assert_eq!(define("DIRTY_BUFFER_ADDR"), DIRTY_BUFFER_ADDR);
        assert_eq!(define("DIRTY_DEFAULT_PAGES"), DIRTY_DEFAULT_PAGES);
        assert_eq!(define("MAX_CPUS"), MAX_CPUS as u64);
        assert_eq!(define("VIRTIO_AREA_ADDR"), VIRTIO_AREA_ADDR);
        assert_eq!(define("VIRTIO_SLOT_SIZE"), VIRTIO_SLOT_SIZE);
        assert_eq!(define("VIRTIO_MAX_DEVS"), VIRTIO_MAX_DEVS as u64);
        assert_eq!(define("VIRTIO_QUEUE_SIZE"), u64::from(VIRTIO_QUEUE_SIZE));
    }

    /// guest.h's vectors and virtio.c's ethertype match the constants.
    #[test]
    fn vectors_and_ethertype_match() {
        let h = include_str!("../guest/guest.h");
        let v = include_str!("../guest/virtio.c");
        let irq = include_str!("../guest/irq.c");
        assert!(h.contains(&format!("#define VEC_COM1 {VECTOR_COM1:#x}")));
        assert!(h.contains(&format!("#define VEC_VIRTIO_BASE {VECTOR_VIRTIO_BASE:#x}")));
        assert!(h.contains(&format!("#define VEC_TIMER {VECTOR_TIMER:#x}")));
        assert!(h.contains(&format!("#define VEC_SCI {VECTOR_SCI:#x}")));
        let acpi = include_str!("../guest/acpi.c");
        assert!(acpi.contains(&format!("kprintf(\"{POWER_BUTTON_LINE}\\n\");")));
        assert!(h.contains(&format!("#define IRQ_TICK_MS {TIMER_TICK_MS}")));
        assert!(v.contains(&format!("#define NET_ETHERTYPE {VIRTIO_NET_ETHERTYPE:#x}")));
        assert!(irq.contains(&format!("\"{NOIRQ_PARAM}\"")));
        // The image (stacks included) ends before the virtio area, which
        // ends by 2 MiB.
        let ld = include_str!("../guest/link.ld");
        assert!(ld.contains(&format!(".virtio_area {VIRTIO_AREA_ADDR:#x} (NOLOAD)")));
        assert!(VIRTIO_AREA_ADDR + VIRTIO_SLOT_SIZE * VIRTIO_MAX_DEVS as u64 <= 2 * MIB);
    }

    /// No FPU/SSE/AVX/XSAVE/cmpxchg16b anywhere (the guest may run in
    /// KVM's instruction emulator).  Needs objdump; skipped without it.
    #[test]
    fn no_fpu_or_vector_instructions() {
        let dir = std::env::temp_dir().join(format!("kvmkit-test-guest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("guest.elf");
        write_elf(&path).unwrap();
        let out = std::process::Command::new("objdump")
            .args(["-d", "-M", "att"])
            .arg(&path)
            .output();
        std::fs::remove_dir_all(&dir).unwrap();
        let Ok(out) = out else {
            eprintln!("objdump not found: skipping the instruction check");
            return;
        };
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let forbidden = [
            "%xmm",
            "%ymm",
            "%zmm",
            "%st",
            "%mm",
            "fxsave",
            "fxrstor",
            "xsave",
            "xrstor",
            "cmpxchg16b",
            "mfence",
            "lfence",
            "sfence",
            "movnt",
            "emms",
            "endbr",
            "tzcnt",
            "lzcnt",
            "popcnt",
        ];
        let mut bad = Vec::new();
        for line in text.lines() {
            // "  addr:\tbytes\tmnemonic operands"
            let Some(insn) = line.split('\t').nth(2) else {
                continue;
            };
            let mnemonic = insn.split_whitespace().next().unwrap_or("");
            let x87 = mnemonic.starts_with('f') && mnemonic != "fs" && mnemonic != "fwait";
            if x87 || forbidden.iter().any(|f| insn.contains(f)) {
                bad.push(line.to_string());
            }
        }
        assert!(
            bad.is_empty(),
            "forbidden instructions:\n{}",
            bad.join("\n")
        );
        assert!(
            text.contains("<pvh_start32>:"),
            "objdump output looks wrong"
        );
    }

    #[test]
    fn virtio_mmio_param_formats() {
        assert_eq!(
            virtio_mmio_param(512, 0xfeb0_0e00, 12),
            "virtio_mmio.device=0x200@0xfeb00e00:12"
        );
        assert_eq!(
            virtio_mmio_param(0x1000, 0xd000_0000, 5),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
    }

    #[test]
    fn autorun_joins_commands() {
        assert_eq!(autorun(&[]), "kvmkit.autorun=");
        assert_eq!(
            autorun(&["poke 0x9000 0", "count"]),
            "kvmkit.autorun=poke:0x9000:0,count"
        );
    }
}
