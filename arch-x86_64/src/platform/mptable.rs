//! The Intel MultiProcessor Specification 1.4 table: floating pointer plus
//! configuration table, for guests that boot without ACPI.

use super::error::{PlatformError, Result};
use super::layout::{IOAPIC_ADDR, LAPIC_ADDR};
use super::mem::{checksum, write_table};
use vm_memory::GuestMemory;

/// The most vCPUs the MP table describes: APIC ids 0..=253, with the
/// IOAPIC taking id `nr_vcpus` (at most 254) and 255 being the broadcast id.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::MAX_MP_VCPUS, 254);
/// ```
pub const MAX_MP_VCPUS: u32 = 254;

const SPEC_REV: u8 = 4; // MP spec 1.4
const OEM_ID: &[u8; 8] = b"KVMKIT  ";
const PRODUCT_ID: &[u8; 12] = b"KVMKIT-VM   ";
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// CPU signature of the processor entries: family 6.
const CPU_SIGNATURE: u32 = 0x600;
/// CPUID.1:EDX features of the processor entries: FPU and APIC.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const ISA_BUS_ID: u8 = 0;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;

/// Size of the floating pointer structure.
const FLOATING_POINTER_LEN: usize = 16;
/// Size of the configuration table header.
const CONFIG_HEADER_LEN: usize = 44;

/// The bytes of the floating pointer for a configuration table at
/// `config_addr`.
fn floating_pointer(config_addr: u32) -> [u8; FLOATING_POINTER_LEN] {
    let mut fp = [0u8; FLOATING_POINTER_LEN];
    fp[0..4].copy_from_slice(b"_MP_");
    fp[4..8].copy_from_slice(&config_addr.to_le_bytes());
    fp[8] = 1; // length in 16-byte paragraphs
    fp[9] = SPEC_REV;
    // fp[11] = 0: a configuration table is present (no default config);
    // fp[12] = 0: IMCR absent, virtual wire mode.
    fp[10] = checksum(&fp);
    fp
}

/// An 8-byte interrupt assignment entry.
fn interrupt_entry(entry: u8, int_type: u8, src_irq: u8, dst_apic: u8, dst_pin: u8) -> [u8; 8] {
    // flags 0: polarity and trigger conform to the bus (ISA: edge, high).
    [
        entry, int_type, 0, 0, ISA_BUS_ID, src_irq, dst_apic, dst_pin,
    ]
}

/// The configuration table's bytes for `nr_vcpus` vCPUs (already bounded).
fn config_table(nr_vcpus: u8) -> Result<Vec<u8>> {
    let ioapic_id = nr_vcpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    let mut push = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        count += 1;
    };
    for apic_id in 0..nr_vcpus {
        let mut cpu = [0u8; 20];
        cpu[0] = ENTRY_PROCESSOR;
        cpu[1] = apic_id;
        cpu[2] = LAPIC_VERSION;
        cpu[3] = CPU_ENABLED | if apic_id == 0 { CPU_BSP } else { 0 };
        cpu[4..8].copy_from_slice(&CPU_SIGNATURE.to_le_bytes());
        cpu[8..12].copy_from_slice(&CPU_FEATURES.to_le_bytes());
        push(&cpu);
    }
    push(&[ENTRY_BUS, ISA_BUS_ID, b'I', b'S', b'A', b' ', b' ', b' ']);
    let ioapic_addr = u32::try_from(IOAPIC_ADDR).unwrap_or(u32::MAX);
    let mut ioapic = [ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1, 0, 0, 0, 0];
    ioapic[4..8].copy_from_slice(&ioapic_addr.to_le_bytes());
    push(&ioapic);
    // The ISA IRQs on the IOAPIC: IRQ 0 (the PIT) on pin 2, IRQ n on pin n.
    // IRQ 2 is the PIC cascade; its pin carries IRQ 0, so it has no entry
    // (two IRQs on one pin would contradict each other; Bochs/QEMU's BIOS
    // and Xen's hvmloader skip it the same way).
    for irq in (0..16u8).filter(|&irq| irq != 2) {
        let pin = if irq == 0 { 2 } else { irq };
        push(&interrupt_entry(
            ENTRY_IO_INTERRUPT,
            INT_VECTORED,
            irq,
            ioapic_id,
            pin,
        ));
    }
    // Every local APIC: the 8259's ExtINT on LINT0, NMI on LINT1.
    push(&interrupt_entry(
        ENTRY_LOCAL_INTERRUPT,
        INT_EXTINT,
        0,
        0xff,
        0,
    ));
    push(&interrupt_entry(ENTRY_LOCAL_INTERRUPT, INT_NMI, 0, 0xff, 1));

    let total = CONFIG_HEADER_LEN + entries.len();
    // At most 44 + 254 * 20 + 19 * 8 bytes.
    let length = u16::try_from(total).map_err(|_| PlatformError::VcpuCount {
        what: "MP table",
        nr_vcpus: u32::from(nr_vcpus),
        max: MAX_MP_VCPUS,
    })?;
    let lapic_addr = u32::try_from(LAPIC_ADDR).unwrap_or(u32::MAX);
    let mut table = Vec::with_capacity(total);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&length.to_le_bytes());
    table.push(SPEC_REV);
    table.push(0); // checksum, below
    table.extend_from_slice(OEM_ID);
    table.extend_from_slice(PRODUCT_ID);
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&lapic_addr.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0); // reserved
    debug_assert_eq!(table.len(), CONFIG_HEADER_LEN);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);
    Ok(table)
}

/// Writes an MP table for `nr_vcpus` vCPUs: the floating pointer (`_MP_`)
/// at `at`, which must be 16-byte aligned (use [`crate::MPTABLE_START`]),
/// and the configuration table (`PCMP`) right after it, both with valid
/// checksums.
///
/// The table lists one processor per vCPU (APIC ids `0..nr_vcpus`, id 0 the
/// bootstrap processor), the ISA bus, one IOAPIC (id `nr_vcpus`, version
/// 0x11, at [`crate::IOAPIC_ADDR`]), the ISA IRQs on that IOAPIC (IRQ 0 on
/// pin 2, IRQ n on pin n, no entry for the cascade IRQ 2: 15 entries),
/// ExtINT on LINT0 and NMI on LINT1 of every local APIC. The local APIC is
/// at [`crate::LAPIC_ADDR`].
///
/// IRQ 0 on pin 2 is what the MADT says too; the VMM must route the PIT's
/// GSI 0 to IOAPIC pin 2 (KVM's default routing sends it to pin 0).
///
/// # Errors
///
/// [`PlatformError::VcpuCount`] for 0 or more than [`MAX_MP_VCPUS`] vCPUs,
/// [`PlatformError::Misaligned`] if `at` is not 16-byte aligned,
/// [`PlatformError::Above4G`] if the configuration table would be above
/// 4 GiB, [`PlatformError::NoRoom`] if guest memory lacks the range.
///
/// ```
/// use kvmkit_arch_x86_64::{write_mptable, MPTABLE_START};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0xe_0000), 0x2_0000)]).unwrap();
/// write_mptable(&mem, MPTABLE_START, 2).unwrap();
/// let mut sig = [0u8; 4];
/// mem.read_slice(&mut sig, GuestAddress(MPTABLE_START)).unwrap();
/// assert_eq!(&sig, b"_MP_");
/// assert!(write_mptable(&mem, MPTABLE_START, 255).is_err());
/// ```
pub fn write_mptable<M: GuestMemory + ?Sized>(mem: &M, at: u64, nr_vcpus: u32) -> Result<()> {
    let nr = u8::try_from(nr_vcpus)
        .ok()
        .filter(|&n| n > 0 && u32::from(n) <= MAX_MP_VCPUS)
        .ok_or(PlatformError::VcpuCount {
            what: "MP table",
            nr_vcpus,
            max: MAX_MP_VCPUS,
        })?;
    if at % 16 != 0 {
        return Err(PlatformError::Misaligned {
            what: "MP floating pointer",
            gpa: at,
            align: 16,
        });
    }
    let config_gpa = at.checked_add(16).ok_or(PlatformError::Above4G {
        what: "MP config table",
        gpa: at,
    })?;
    let config_addr = u32::try_from(config_gpa).map_err(|_| PlatformError::Above4G {
        what: "MP config table",
        gpa: config_gpa,
    })?;
    let table = config_table(nr)?;
    // Check the config table fits before writing anything.
    write_table(mem, "MP config table", config_gpa, &table)?;
    write_table(
        mem,
        "MP floating pointer",
        at,
        &floating_pointer(config_addr),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::layout::MPTABLE_START;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0xe_0000), 0x2_0000)]).unwrap()
    }

    fn read(m: &GuestMemoryMmap, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        m.read_slice(&mut v, GuestAddress(gpa)).unwrap();
        v
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    /// Parses the table at `at` back, checking signatures, lengths and
    /// checksums; returns the entries by type.
    fn parse(m: &GuestMemoryMmap, at: u64) -> (Vec<Vec<u8>>, u32) {
        let fp = read(m, at, 16);
        assert_eq!(&fp[0..4], b"_MP_");
        assert_eq!((fp[8], fp[9], fp[11], fp[12]), (1, 4, 0, 0));
        assert_eq!(sum(&fp), 0, "floating pointer checksum");
        let config = u64::from(u32::from_le_bytes(fp[4..8].try_into().unwrap()));
        assert_eq!(config, at + 16);
        let header = read(m, config, 44);
        assert_eq!(&header[0..4], b"PCMP");
        assert_eq!(header[6], 4);
        let len = usize::from(u16::from_le_bytes([header[4], header[5]]));
        let table = read(m, config, len);
        assert_eq!(sum(&table), 0, "config table checksum");
        let count = u16::from_le_bytes([header[34], header[35]]);
        let lapic = u32::from_le_bytes(header[36..40].try_into().unwrap());
        let mut entries = Vec::new();
        let mut off = 44;
        while off < len {
            let size = if table[off] == 0 { 20 } else { 8 };
            entries.push(table[off..off + size].to_vec());
            off += size;
        }
        assert_eq!(off, len);
        assert_eq!(entries.len(), usize::from(count));
        (entries, lapic)
    }

    fn check(nr: u32) {
        let m = mem();
        write_mptable(&m, MPTABLE_START, nr).unwrap();
        let (entries, lapic) = parse(&m, MPTABLE_START);
        assert_eq!(lapic, 0xfee0_0000);
        let of = |t: u8| entries.iter().filter(move |e| e[0] == t);
        let n = usize::try_from(nr).unwrap();
        assert_eq!(entries.len(), n + 19);
        let cpus: Vec<_> = of(0).collect();
        assert_eq!(cpus.len(), n);
        for (i, cpu) in cpus.iter().enumerate() {
            assert_eq!(usize::from(cpu[1]), i);
            assert_eq!(cpu[3], if i == 0 { 3 } else { 1 });
        }
        let bus: Vec<_> = of(1).collect();
        assert_eq!(bus.len(), 1);
        assert_eq!(&bus[0][2..8], b"ISA   ");
        let ioapic: Vec<_> = of(2).collect();
        assert_eq!(ioapic.len(), 1);
        assert_eq!(u32::from(ioapic[0][1]), nr);
        assert_eq!(ioapic[0][2], 0x11);
        assert_eq!(&ioapic[0][4..8], &0xfec0_0000u32.to_le_bytes());
        let irqs: Vec<(u8, u8)> = of(3).map(|e| (e[5], e[7])).collect();
        assert_eq!(irqs.len(), 15);
        assert!(irqs.contains(&(0, 2)));
        assert!(!irqs.iter().any(|&(irq, _)| irq == 2));
        assert!(irqs.iter().all(|&(irq, pin)| irq == 0 || irq == pin));
        assert!(of(3).all(|e| u32::from(e[6]) == nr));
        let local: Vec<(u8, u8, u8)> = of(4).map(|e| (e[1], e[6], e[7])).collect();
        assert_eq!(local, vec![(3, 0xff, 0), (1, 0xff, 1)]);
    }

    #[test]
    fn one_and_four_vcpus() {
        check(1);
        check(4);
    }

    #[test]
    fn the_most_vcpus_fit_the_f_segment() {
        check(MAX_MP_VCPUS);
    }

    #[test]
    fn errors() {
        let m = mem();
        for nr in [0, 255, 1000] {
            assert_eq!(
                write_mptable(&m, MPTABLE_START, nr)
                    .unwrap_err()
                    .to_string(),
                format!("the MP table describes 1 to 254 vCPUs, got {nr}")
            );
        }
        assert!(matches!(
            write_mptable(&m, MPTABLE_START + 8, 1).unwrap_err(),
            PlatformError::Misaligned { .. }
        ));
        assert!(matches!(
            write_mptable(&m, 0xffff_fff0, 1).unwrap_err(),
            PlatformError::Above4G {
                gpa: 0x1_0000_0000,
                ..
            }
        ));
        assert!(matches!(
            write_mptable(&m, u64::MAX - 15, 1).unwrap_err(),
            PlatformError::Above4G { .. }
        ));
        assert_eq!(
            write_mptable(&m, 0xf_ffe0, 4).unwrap_err().to_string(),
            "guest memory has no room for the MP config table (276 bytes) at 0xffff0"
        );
        // Nothing was written.
        assert_eq!(read(&m, 0xf_ffe0, 16), vec![0; 16]);
    }
}
