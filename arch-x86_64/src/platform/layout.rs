//! The guest physical memory map of a kvmkit PC guest: where RAM is, where
//! the boot data goes and which ranges the e820 map reserves.
//!
//! ```text
//! 0x0000_0000  real-mode IVT and BDA (RAM, left alone)
//! 0x0000_0500  boot GDT                        (crate::BOOT_GDT_ADDR)
//! 0x0000_1000  long-mode page tables, 6 pages  (crate::BOOT_PAGE_TABLES_ADDR)
//! 0x0000_6000  PVH hvm_start_info              (PVH_INFO_ADDR; PVH never writes page tables)
//! 0x0000_6040  PVH memory map, then module list (PVH_MEMMAP_ADDR .. PVH_INFO_END)
//! 0x0000_7000  Linux zero page (boot_params)   (ZERO_PAGE_ADDR)
//! 0x0000_8ff0  boot stack top, growing down    (BOOT_STACK_TOP)
//! 0x0002_0000  kernel command line, 2 KiB      (CMDLINE_ADDR)
//! 0x0009_fc00  EBDA, reserved, kept empty      (EBDA_START)
//! 0x000a_0000  legacy VGA / option ROM hole    (no RAM, not in e820)
//! 0x000e_0000  read-only "BIOS" slot, 128 KiB  (BIOS_START), reserved in e820:
//!              0xe_0000 RSDP, then FACS, XSDT, FADT, MADT, DSDT (ACPI_START .. ACPI_END)
//!              0xf_0000 MP floating pointer, then the MP config table (MPTABLE_START)
//! 0x0010_0000  high RAM (kernel, initrd placed by the VMM)  (HIGH_RAM_START)
//! 0xc000_0000  32-bit PCI hole up to 4 GiB for big guests (not RAM, not in e820)
//! 0xfec0_0000  IOAPIC, 4 KiB, reserved         (IOAPIC_ADDR)
//! 0xfee0_0000  local APIC, 4 KiB, reserved     (LAPIC_ADDR)
//! 0x1_0000_0000 the rest of RAM
//! ```

/// End of conventional low RAM: `[0, LOW_RAM_END)` is the 640 KiB below the
/// legacy hole.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::LOW_RAM_END, 640 << 10);
/// ```
pub const LOW_RAM_END: u64 = 0xa_0000;

/// Start of the extended BIOS data area: the last KiB of low RAM, which the
/// e820 map reserves as a PC firmware would (so low RAM reads as 639 KiB).
/// kvmkit writes nothing there; the MP table lives in the BIOS region.
///
/// ```
/// use kvmkit_arch_x86_64::{EBDA_START, LOW_RAM_END};
/// assert_eq!(LOW_RAM_END - EBDA_START, 1024);
/// ```
pub const EBDA_START: u64 = 0x9_fc00;

/// Start of the read-only "BIOS" region that the VMM maps as its own
/// read-only memory slot. It holds the ACPI tables and the MP table.
///
/// ```
/// use kvmkit_arch_x86_64::{BIOS_SIZE, BIOS_START, HIGH_RAM_START};
/// assert_eq!(BIOS_START + BIOS_SIZE, HIGH_RAM_START);
/// ```
pub const BIOS_START: u64 = 0xe_0000;

/// Size of the read-only BIOS region: 128 KiB, `[0xe0000, 0x100000)`.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::BIOS_SIZE, 128 << 10);
/// ```
pub const BIOS_SIZE: u64 = 0x2_0000;

/// Where the ACPI tables start: the RSDP, at the bottom of the BIOS region
/// and 16-byte aligned, so that a legacy scan of `[0xe0000, 0x100000)`
/// finds it as well as the address passed in the zero page or PVH start
/// info.
///
/// ```
/// use kvmkit_arch_x86_64::{ACPI_START, BIOS_START};
/// assert_eq!(ACPI_START, BIOS_START);
/// assert_eq!(ACPI_START % 16, 0);
/// ```
pub const ACPI_START: u64 = BIOS_START;

/// End (exclusive) of the space for ACPI tables: 64 KiB from
/// [`ACPI_START`]. The MP table takes the upper half of the BIOS region.
///
/// ```
/// use kvmkit_arch_x86_64::{ACPI_END, MPTABLE_START};
/// assert_eq!(ACPI_END, MPTABLE_START);
/// ```
pub const ACPI_END: u64 = 0xf_0000;

/// Where the MP floating pointer goes (the MP configuration table follows
/// it): the F segment, one of the areas Linux scans for `_MP_`.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::MPTABLE_START % 16, 0);
/// ```
pub const MPTABLE_START: u64 = 0xf_0000;

/// Start of high RAM, above the legacy hole and the BIOS region.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::HIGH_RAM_START, 1 << 20);
/// ```
pub const HIGH_RAM_START: u64 = 0x10_0000;

/// Where the Linux zero page (`struct boot_params`, 4 KiB) is written; its
/// address goes in `rsi` for the 64-bit entry.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::ZERO_PAGE_ADDR, 0x7000);
/// ```
pub const ZERO_PAGE_ADDR: u64 = 0x7000;

/// Top of the boot stack for the Linux 64-bit entry (`rsp`), above the zero
/// page.
///
/// ```
/// use kvmkit_arch_x86_64::{BOOT_STACK_TOP, ZERO_PAGE_ADDR};
/// assert!(BOOT_STACK_TOP >= ZERO_PAGE_ADDR + 4096);
/// ```
pub const BOOT_STACK_TOP: u64 = 0x8ff0;

/// Where the VMM writes the kernel command line (NUL-terminated).
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::CMDLINE_ADDR, 0x2_0000);
/// ```
pub const CMDLINE_ADDR: u64 = 0x2_0000;

/// Bytes reserved for the command line at [`CMDLINE_ADDR`], including the
/// terminating NUL: Linux/x86's `COMMAND_LINE_SIZE`. linux-loader has no
/// such constant; pass this to `linux_loader::cmdline::Cmdline::new`, whose
/// capacity also counts the NUL.
///
/// ```
/// let cmdline = linux_loader::cmdline::Cmdline::new(kvmkit_arch_x86_64::CMDLINE_MAX_SIZE);
/// assert!(cmdline.is_ok());
/// ```
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// Where the PVH `hvm_start_info` is written; its address goes in `ebx`.
/// This page is also the last page directory of the long-mode page tables
/// (`crate::BOOT_PAGE_TABLES_ADDR`), which a PVH boot (32-bit entry) never
/// writes: write the start info after setting the vCPU up, or boot one way
/// only.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::PVH_INFO_ADDR, 0x6000);
/// ```
pub const PVH_INFO_ADDR: u64 = 0x6000;

/// Where the PVH memory map starts, right after the 56-byte start info; the
/// one-entry module list (the initrd) follows the memory map.
///
/// ```
/// use kvmkit_arch_x86_64::{PVH_INFO_ADDR, PVH_MEMMAP_ADDR};
/// assert_eq!(PVH_MEMMAP_ADDR - PVH_INFO_ADDR, 0x40);
/// ```
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;

/// End (exclusive) of the PVH area: the memory map and module list must end
/// below the zero page.
///
/// ```
/// use kvmkit_arch_x86_64::{PVH_INFO_END, ZERO_PAGE_ADDR};
/// assert_eq!(PVH_INFO_END, ZERO_PAGE_ADDR);
/// ```
pub const PVH_INFO_END: u64 = 0x7000;

/// Start of the 32-bit PCI hole `[3 GiB, 4 GiB)` of big guests (the
/// default of `kvmkit_memory::pc_layout`): never RAM, not listed in e820
/// except for the IOAPIC and local APIC pages inside it.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::PCI_HOLE_START, 3 << 30);
/// ```
pub const PCI_HOLE_START: u64 = 0xc000_0000;

/// Size of the 32-bit PCI hole, up to 4 GiB.
///
/// ```
/// use kvmkit_arch_x86_64::{PCI_HOLE_SIZE, PCI_HOLE_START};
/// assert_eq!(PCI_HOLE_START + PCI_HOLE_SIZE, 1 << 32);
/// ```
pub const PCI_HOLE_SIZE: u64 = 0x4000_0000;

/// The IOAPIC's MMIO base (its default address), reserved in e820 and
/// named in the MP table and the MADT.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::IOAPIC_ADDR, 0xfec0_0000);
/// ```
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;

/// Bytes of the IOAPIC's MMIO window.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::IOAPIC_SIZE, 4096);
/// ```
pub const IOAPIC_SIZE: u64 = 0x1000;

/// The local APIC's MMIO base (the reset value of `IA32_APIC_BASE`),
/// reserved in e820 and named in the MP table and the MADT.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::LAPIC_ADDR, 0xfee0_0000);
/// ```
pub const LAPIC_ADDR: u64 = 0xfee0_0000;

/// Bytes of the local APIC's MMIO window.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::LAPIC_SIZE, 4096);
/// ```
pub const LAPIC_SIZE: u64 = 0x1000;

/// The ranges the e820 map always reserves, as `(gpa, len)`, in address
/// order: the EBDA, the BIOS region, the IOAPIC and the local APIC.
///
/// ```
/// let r = kvmkit_arch_x86_64::E820_RESERVED;
/// assert!(r.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
/// ```
pub const E820_RESERVED: [(u64, u64); 4] = [
    (EBDA_START, LOW_RAM_END - EBDA_START),
    (BIOS_START, BIOS_SIZE),
    (IOAPIC_ADDR, IOAPIC_SIZE),
    (LAPIC_ADDR, LAPIC_SIZE),
];

// The boot data areas must not overlap each other.
const _: () = assert!(PVH_MEMMAP_ADDR >= PVH_INFO_ADDR + 56);
const _: () = assert!(PVH_INFO_END <= ZERO_PAGE_ADDR);
const _: () = assert!(ZERO_PAGE_ADDR + 4096 <= BOOT_STACK_TOP);
const _: () = assert!(BOOT_STACK_TOP < CMDLINE_ADDR);
const _: () = assert!(CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
const _: () = assert!(ACPI_START + 0x1_0000 == ACPI_END);
const _: () = assert!(MPTABLE_START + 0x1_0000 == BIOS_START + BIOS_SIZE);
