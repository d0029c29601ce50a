//! A vCPU backend that replays `kvm_run` areas instead of entering a guest.

use crate::{Arch, Error, Kicker, Result, RunVcpu, VcpuExit, VcpuId};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// Replays `kvm_run` areas, laid out as architecture `A`'s kernel lays them
/// out, through `A::decode_exit`: the shared run loop then handles each exit
/// exactly as it would a real one. This is how the loop and each arch's exit
/// handling are exercised on hosts of another architecture, and how a VMM can
/// replay recorded exits.
///
/// When the script is exhausted the vCPU behaves like a guest spinning in a
/// loop: `run` waits until it is kicked and returns
/// [`VcpuExit::Interrupted`].
///
/// ```
/// use kvmkit_core::{ScriptedVcpu, VcpuId};
/// // `A` is an arch crate's marker type; see kvmkit-runloop's tests.
/// fn script<A: kvmkit_core::Arch>(areas: Vec<Vec<u8>>) -> ScriptedVcpu<A> {
///     ScriptedVcpu::new(VcpuId(0), areas)
/// }
/// ```
pub struct ScriptedVcpu<A: Arch> {
    id: VcpuId,
    areas: Vec<Vec<u8>>,
    next: usize,
    kicker: Kicker,
    _arch: PhantomData<fn() -> A>,
}

impl<A: Arch> fmt::Debug for ScriptedVcpu<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedVcpu")
            .field("arch", &A::NAME)
            .field("id", &self.id)
            .field("next", &self.next)
            .field("len", &self.areas.len())
            .finish()
    }
}

impl<A: Arch> ScriptedVcpu<A> {
    /// A vCPU that will return the exits in `areas`, in order.
    pub fn new(id: VcpuId, areas: Vec<Vec<u8>>) -> Self {
        ScriptedVcpu {
            id,
            areas,
            next: 0,
            kicker: Kicker::new(),
            _arch: PhantomData,
        }
    }

    /// The areas already returned, with whatever the loop wrote into them
    /// (MMIO read data, hypercall return values…).
    pub fn completed(&self) -> &[Vec<u8>] {
        &self.areas[..self.next]
    }

    /// How many exits remain.
    pub fn remaining(&self) -> usize {
        self.areas.len() - self.next
    }
}

impl<A: Arch> RunVcpu<A> for ScriptedVcpu<A> {
    fn id(&self) -> VcpuId {
        self.id
    }

    fn run(&mut self) -> Result<VcpuExit<'_, A>> {
        loop {
            if self.kicker.take_pending() {
                return Ok(VcpuExit::Interrupted);
            }
            if self.next < self.areas.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let i = self.next;
        self.next += 1;
        let vcpu = self.id.0;
        A::decode_exit(&mut self.areas[i]).map_err(|source| Error::DecodeExit { vcpu, source })
    }

    fn kicker(&self) -> Kicker {
        self.kicker.clone()
    }

    /// The index of the next scripted exit: scripts have no guest PC.
    fn program_counter(&self) -> Result<u64> {
        Ok(self.next as u64)
    }
}
