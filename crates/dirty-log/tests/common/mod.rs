//! A VM with a dirty tracker and tiny hand-assembled guests that write the
//! pages the host chooses. Shared by the KVM tests and the harvest benchmark
//! (`benches/harvest.rs` includes this file with `#[path]`).
//!
//! Guest code runs in KVM's instruction emulator on this project's machine
//! (about 2.4 million instructions per second), so the guests are loops of a
//! few instructions whose parameters the host puts in registers:
//!
//! - [`Machine::write_list`]: 32-bit protected mode, paging off; writes one
//!   byte at each address of a list the host wrote into low memory.
//! - [`Machine::write_stride`]: 64-bit long mode with 2 MiB pages mapping
//!   [`LONG_MODE_MAP_GIB`] GiB; writes `count` bytes `stride` apart from
//!   `start`, so it reaches memory above 4 GiB.
//! - [`Machine::spin_writer`]: protected mode, rewrites `pages` pages from a
//!   base forever, until the run loop stops it.
//!
//! Each guest ends (except the spinner) with `out 0x80, al; hlt`.

#![allow(dead_code)] // each test binary uses a different part
#![allow(clippy::cast_possible_truncation)] // small guest addresses in registers

use std::sync::Arc;

use kvmkit_arch_x86_64::{BootSetup, IoDirection, X86Exit, X86_64};
use kvmkit_core::{Kvm, SlotId, Vcpu, VcpuExit, VcpuId, Vm};
use kvmkit_dirty_log::{DirtyTracker, HostWrites, Preference};
use kvmkit_memory::{RegionConfig, SlotTable};
use vm_memory::bitmap::NewBitmap;
use vm_memory::{Bytes, GuestAddress};

/// Bytes of low memory (slot of code, page tables and the address list),
/// never dirty-logged.
pub const LOW_BYTES: u64 = 0x10_0000;
/// Where the protected-mode guests' code starts.
pub const CODE32: u64 = 0x1000;
/// Where the spinning guest's code starts.
pub const SPIN32: u64 = 0x2000;
/// Where the long-mode guest's code starts (above the boot page tables at
/// 0x1000..0x7000).
pub const CODE64: u64 = 0x8000;
/// The address list of [`Machine::write_list`]: `u32`s up to [`LIST_END`].
pub const LIST: u64 = 0x1_0000;
/// The end of the address list area.
pub const LIST_END: u64 = 0x8_0000;
/// Where the long-mode page tables of [`Machine::long_mode_vcpu`] go.
pub const PAGE_TABLES: u64 = 0x8_0000;
/// GiB of guest-physical memory the long-mode guest maps (2 MiB pages).
pub const LONG_MODE_MAP_GIB: u64 = 32;
/// The port the guests write to when done.
pub const DONE_PORT: u16 = 0x80;

/// The protected-mode list writer, at [`CODE32`]:
/// `esi` = list, `ecx` = count (>= 1), `al` = the byte.
const LIST_WRITER: [u8; 13] = [
    0x8b, 0x3e, //       loop: mov edi, [esi]
    0x88, 0x07, //             mov [edi], al
    0x83, 0xc6, 0x04, //       add esi, 4
    0x49, //                   dec ecx
    0x75, 0xf6, //             jnz loop
    0xe6, 0x80, //             out 0x80, al
    0xf4, //                   hlt
];

/// The end of the spinner's code.
pub const SPIN32_END: u64 = SPIN32 + SPINNER.len() as u64;

/// The protected-mode spinner, at [`SPIN32`]: `ebx` = base, `edx` = pages (>= 1).
const SPINNER: [u8; 19] = [
    0x89, 0xdf, //                          start: mov edi, ebx
    0x89, 0xd1, //                                 mov ecx, edx
    0x88, 0x07, //                          inner: mov [edi], al
    0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, //         add edi, 0x1000
    0x49, //                                       dec ecx
    0x75, 0xf5, //                                 jnz inner
    0xfe, 0xc0, //                                 inc al
    0xeb, 0xed, //                                 jmp start
];

/// The long-mode stride writer, at [`CODE64`]:
/// `rdi` = start, `rdx` = stride, `rcx` = count (>= 1), `al` = the byte.
const STRIDE_WRITER: [u8; 13] = [
    0x88, 0x07, //             loop: mov [rdi], al
    0x48, 0x01, 0xd7, //             add rdi, rdx
    0x48, 0xff, 0xc9, //             dec rcx
    0x75, 0xf6, //                   jnz loop
    0xe6, 0x80, //                   out 0x80, al
    0xf4, //                         hlt
];

/// A VM with its tracker, a slot table (slot 0: [`LOW_BYTES`] of low memory)
/// and, once created, vCPU 0.
pub struct Machine<B: NewBitmap + HostWrites + 'static> {
    pub vm: Arc<Vm<X86_64>>,
    pub tracker: Arc<DirtyTracker<X86_64>>,
    pub table: SlotTable<X86_64, B>,
    pub low: SlotId,
}

impl<B: NewBitmap + HostWrites + 'static> Machine<B> {
    /// A VM whose tracker uses `preference`; the tracker is created before
    /// any vCPU, as the ring requires.
    pub fn new(kvm: &Kvm<X86_64>, preference: Preference) -> Self {
        Self::with_clear_chunk(kvm, preference, kvmkit_dirty_log::DEFAULT_CLEAR_CHUNK_PAGES)
    }

    /// Like [`Machine::new`], with `KVM_CLEAR_DIRTY_LOG` chunks of `chunk_pages`.
    pub fn with_clear_chunk(kvm: &Kvm<X86_64>, preference: Preference, chunk_pages: usize) -> Self {
        let vm = Arc::new(kvm.create_vm(&Default::default()).expect("create VM"));
        let tracker = DirtyTracker::new(vm.clone(), preference)
            .and_then(|t| t.with_clear_chunk_pages(chunk_pages))
            .expect("tracker");
        let tracker = Arc::new(tracker);
        let mut table = SlotTable::with_page_size(32, 0x1000).expect("table");
        table.register(vm.clone()).expect("register");
        let low = table
            .add(RegionConfig::anonymous(GuestAddress(0), LOW_BYTES))
            .expect("low memory");
        let mem = table.guest_memory();
        mem.write_slice(&LIST_WRITER, GuestAddress(CODE32))
            .expect("code");
        mem.write_slice(&SPINNER, GuestAddress(SPIN32))
            .expect("code");
        mem.write_slice(&STRIDE_WRITER, GuestAddress(CODE64))
            .expect("code");
        Machine {
            vm,
            tracker,
            table,
            low,
        }
    }

    /// Adds a slot of `len` bytes at `gpa`, logging off.
    pub fn add_slot(&mut self, gpa: u64, len: u64) -> SlotId {
        self.table
            .add(RegionConfig::anonymous(GuestAddress(gpa), len))
            .expect("add slot")
    }

    /// Adds a slot and turns its logging on through the tracker.
    pub fn add_logged_slot(&mut self, gpa: u64, len: u64) -> SlotId {
        let id = self.add_slot(gpa, len);
        self.tracker
            .enable_logging(&mut self.table, id)
            .expect("enable logging");
        id
    }

    /// The guest-physical address of page `page` of slot `id`.
    pub fn gpa(&self, id: SlotId, page: usize) -> u64 {
        self.table.slot(id).expect("slot").gpa().0 + page as u64 * 0x1000
    }

    /// vCPU 0 in 32-bit protected mode (paging off), its ring attached.
    pub fn protected_vcpu(&self) -> Vcpu<X86_64> {
        self.protected_vcpu_id(0)
    }

    /// vCPU `id` in 32-bit protected mode (paging off), its ring attached.
    pub fn protected_vcpu_id(&self, id: u32) -> Vcpu<X86_64> {
        let vcpu = self
            .vm
            .create_vcpu(VcpuId(id), &Default::default())
            .expect("vCPU");
        let boot = BootSetup::Protected32 {
            entry: CODE32 as u32,
            ebx: 0,
        };
        vcpu.setup_boot(&*self.table.guest_memory(), &boot)
            .expect("boot");
        self.tracker.attach_vcpu(&vcpu).expect("attach ring");
        vcpu
    }

    /// vCPU 0 in 64-bit long mode with [`LONG_MODE_MAP_GIB`] GiB identity
    /// mapped in 2 MiB pages, its ring attached.
    pub fn long_mode_vcpu(&self) -> Vcpu<X86_64> {
        let vcpu = self
            .vm
            .create_vcpu(VcpuId(0), &Default::default())
            .expect("vCPU");
        let mem = self.table.guest_memory();
        let boot = BootSetup::LongMode {
            entry: CODE64,
            stack: 0x9000,
            rsi: 0,
        };
        vcpu.setup_boot(&*mem, &boot).expect("boot");
        // The boot tables map 4 GiB; these map LONG_MODE_MAP_GIB.
        let pml4 = PAGE_TABLES;
        let pdpt = PAGE_TABLES + 0x1000;
        let pds = PAGE_TABLES + 0x2000;
        assert!(pds + LONG_MODE_MAP_GIB * 0x1000 <= LOW_BYTES);
        mem.write_obj(pdpt | 0x3, GuestAddress(pml4)).expect("PML4");
        for gib in 0..LONG_MODE_MAP_GIB {
            let pd = pds + gib * 0x1000;
            mem.write_obj(pd | 0x3, GuestAddress(pdpt + gib * 8))
                .expect("PDPT");
            let entries: Vec<u8> = (0..512u64)
                .flat_map(|i| ((gib << 30) | (i << 21) | 0x83).to_le_bytes())
                .collect();
            mem.write_slice(&entries, GuestAddress(pd)).expect("PD");
        }
        let mut sregs = vcpu.get_sregs().expect("sregs");
        sregs.cr3 = pml4;
        vcpu.set_sregs(&sregs).expect("sregs");
        self.tracker.attach_vcpu(&vcpu).expect("attach ring");
        vcpu
    }

    /// Runs the list writer until it reports done: one byte `value` at each
    /// address of `addrs` (below 4 GiB). Full rings are emptied through the
    /// tracker, as the run loop's hook would; returns how many were full.
    pub fn write_list(&self, vcpu: &mut Vcpu<X86_64>, addrs: &[u64], value: u8) -> u64 {
        self.load_list(vcpu, LIST, addrs, value);
        self.run_to_done(vcpu)
    }

    /// Sets `vcpu` up to run the list writer over `addrs` (below 4 GiB), the
    /// list stored at `list` (in low memory, from [`LIST`] to [`LIST_END`]).
    pub fn load_list(&self, vcpu: &Vcpu<X86_64>, list: u64, addrs: &[u64], value: u8) {
        assert!(!addrs.is_empty() && list >= LIST);
        assert!(list + addrs.len() as u64 * 4 <= LIST_END);
        let bytes: Vec<u8> = addrs
            .iter()
            .flat_map(|a| u32::try_from(*a).expect("below 4 GiB").to_le_bytes())
            .collect();
        self.table
            .guest_memory()
            .write_slice(&bytes, GuestAddress(list))
            .expect("list");
        let mut regs = vcpu.get_regs().expect("regs");
        regs.rip = CODE32;
        regs.rsi = list;
        regs.rcx = addrs.len() as u64;
        regs.rax = u64::from(value);
        vcpu.set_regs(&regs).expect("regs");
    }

    /// Runs the long-mode stride writer until done: `count` bytes `value`,
    /// `stride` bytes apart from `start`; returns how many rings were full.
    pub fn write_stride(
        &self,
        vcpu: &mut Vcpu<X86_64>,
        start: u64,
        stride: u64,
        count: u64,
        value: u8,
    ) -> u64 {
        assert!(count >= 1);
        assert!(start + (count - 1) * stride < LONG_MODE_MAP_GIB << 30);
        let mut regs = vcpu.get_regs().expect("regs");
        regs.rip = CODE64;
        regs.rdi = start;
        regs.rdx = stride;
        regs.rcx = count;
        regs.rax = u64::from(value);
        vcpu.set_regs(&regs).expect("regs");
        self.run_to_done(vcpu)
    }

    /// Sets up the spinner on `vcpu`: it rewrites `pages` pages from `base`
    /// until stopped (run it with the run loop).
    pub fn spin_writer(&self, vcpu: &Vcpu<X86_64>, base: u64, pages: u32) {
        let mut regs = vcpu.get_regs().expect("regs");
        regs.rip = SPIN32;
        regs.rbx = base;
        regs.rdx = u64::from(pages);
        vcpu.set_regs(&regs).expect("regs");
    }

    fn run_to_done(&self, vcpu: &mut Vcpu<X86_64>) -> u64 {
        let mut full = 0;
        loop {
            let id = vcpu.id();
            match vcpu.run().expect("KVM_RUN") {
                VcpuExit::Arch(X86Exit::Io {
                    direction: IoDirection::Out,
                    port: DONE_PORT,
                    ..
                }) => return full,
                VcpuExit::DirtyRingFull => {
                    self.tracker.on_ring_full(id).expect("empty the rings");
                    full += 1;
                }
                VcpuExit::Interrupted => {}
                e => panic!("unexpected exit {e:?}"),
            }
        }
    }
}

/// A small xorshift64 so the tests and the bench need no extra crates.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` distinct values below `bound`, ascending.
    pub fn distinct(&mut self, n: usize, bound: usize) -> Vec<usize> {
        let mut set = std::collections::BTreeSet::new();
        while set.len() < n {
            set.insert((self.next() % bound as u64) as usize);
        }
        set.into_iter().collect()
    }
}
