//! The MC146818 CMOS RTC at ports 0x70/0x71: wall-clock time and memory size.
//!
//! vm-superio only has the PL031 RTC (Arm); x86 guests read the CMOS one.

use super::state::hex_bytes;
use super::DeviceStateError;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

/// A source of the current time, in seconds since the Unix epoch.
pub trait Clock: Send {
    /// Seconds since 1970-01-01 00:00:00 UTC.
    fn now(&self) -> u64;
}

/// The host's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostClock;

impl Clock for HostClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The saved state of a [`Cmos`]: the index register and the 128 bytes of
/// NVRAM (a hex string in JSON).
///
/// Carried: the index the guest last selected, and the NVRAM, which holds
/// what the guest wrote and the memory-size bytes the VMM set (the same
/// machine is restored, so they stay right).
///
/// Not carried: the time. The clock registers read the host's clock at each
/// access, in UTC, so after a restore the guest sees the host's time, as
/// QEMU's `-rtc base=utc` does, not the time it saw when it was saved;
/// the gap is the guest's to notice (as after a suspend). The status
/// registers A–D are fixed in this model (A 0x26, B 0x02, C 0x00, D 0x80:
/// the guest's writes to them are ignored), so there is nothing of them to
/// carry. The NVRAM bytes at the clock and status offsets (0x00–0x0d, 0x32)
/// are never read and are carried as they are.
///
/// ```
/// use kvmkit_vmm_reference::devices::CmosState;
/// let s = CmosState { index: 0x10, nvram: vec![0; 128] };
/// s.check()?;
/// let json = serde_json::to_string(&s).unwrap();
/// assert_eq!(serde_json::from_str::<CmosState>(&json).unwrap(), s);
/// # Ok::<(), kvmkit_vmm_reference::devices::DeviceStateError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmosState {
    /// The selected register, 0 to 0x7f (the NMI-mask bit is not kept).
    pub index: u8,
    /// The NVRAM: exactly 128 bytes.
    #[serde(with = "hex_bytes")]
    pub nvram: Vec<u8>,
}

impl CmosState {
    /// Checks that a CMOS could be in this state: an index below 0x80 and
    /// 128 bytes of NVRAM.
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::{CmosState, DeviceStateError};
    /// let s = CmosState { index: 0x80, nvram: vec![0; 128] };
    /// assert!(matches!(s.check(), Err(DeviceStateError::CmosIndex { index: 0x80 })));
    /// ```
    pub fn check(&self) -> Result<(), DeviceStateError> {
        if self.nvram.len() != NVRAM_LEN {
            return Err(DeviceStateError::CmosNvram {
                len: self.nvram.len(),
            });
        }
        if self.index > 0x7f {
            return Err(DeviceStateError::CmosIndex { index: self.index });
        }
        Ok(())
    }
}

const NVRAM_LEN: usize = 128;

/// The CMOS RTC and its 128 bytes of NVRAM.
#[derive(Debug)]
pub struct Cmos<C: Clock = HostClock> {
    index: u8,
    nvram: [u8; NVRAM_LEN],
    clock: C,
}

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_C: u8 = 0x0c;
const STATUS_D: u8 = 0x0d;
const CENTURY: u8 = 0x32;

fn bcd(v: u64) -> u8 {
    let v = (v % 100) as u8;
    ((v / 10) << 4) | (v % 10)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl Cmos<HostClock> {
    /// A CMOS for a guest with `ram_below_4g` and `ram_above_4g` bytes of RAM.
    pub fn new(ram_below_4g: u64, ram_above_4g: u64) -> Self {
        Cmos::with_clock(ram_below_4g, ram_above_4g, HostClock)
    }
}

impl<C: Clock> Cmos<C> {
    /// The ports: index at 0x70, data at 0x71.
    pub const BASE: u16 = 0x70;
    /// Two ports.
    pub const LEN: u16 = 2;

    /// A CMOS reading time from `clock`.
    pub fn with_clock(ram_below_4g: u64, ram_above_4g: u64, clock: C) -> Self {
        let mut nvram = [0u8; 128];
        let kib = |b: u64| b / 1024;
        let put16 = |nv: &mut [u8; 128], at: usize, v: u64| {
            let v = v.min(0xffff) as u16;
            nv[at..at + 2].copy_from_slice(&v.to_le_bytes());
        };
        put16(&mut nvram, 0x15, 640);
        let ext = kib(ram_below_4g.saturating_sub(1 << 20)).min(63 * 1024);
        put16(&mut nvram, 0x17, ext);
        put16(&mut nvram, 0x30, ext);
        put16(
            &mut nvram,
            0x34,
            ram_below_4g.saturating_sub(16 << 20) >> 16,
        );
        let high = ram_above_4g >> 16;
        nvram[0x5b] = (high & 0xff) as u8;
        nvram[0x5c] = ((high >> 8) & 0xff) as u8;
        nvram[0x5d] = ((high >> 16) & 0xff) as u8;
        Cmos {
            index: 0,
            nvram,
            clock,
        }
    }

    /// The saved state of the CMOS, for a snapshot: see [`CmosState`].
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::Cmos;
    /// let c = Cmos::new(512 << 20, 0);
    /// assert_eq!(c.state().nvram.len(), 128);
    /// ```
    pub fn state(&self) -> CmosState {
        CmosState {
            index: self.index,
            nvram: self.nvram.to_vec(),
        }
    }

    /// Puts the CMOS in `state` (saved by [`Cmos::state`], maybe in another
    /// process), keeping its clock: the guest reads the host's time from
    /// now on. The state is checked first ([`CmosState::check`]); a refused
    /// state changes nothing.
    ///
    /// ```
    /// use kvmkit_vmm_reference::devices::Cmos;
    /// use vm_device::{bus::PioAddress, MutDevicePio};
    /// let mut a = Cmos::new(512 << 20, 0);
    /// a.pio_write(PioAddress(0x70), 0, &[0x40]);
    /// a.pio_write(PioAddress(0x70), 1, &[0x99]);
    /// let mut b = Cmos::new(512 << 20, 0);
    /// b.restore(&a.state())?;
    /// let mut d = [0u8];
    /// b.pio_read(PioAddress(0x70), 1, &mut d);
    /// assert_eq!(d, [0x99]);
    /// # Ok::<(), kvmkit_vmm_reference::devices::DeviceStateError>(())
    /// ```
    pub fn restore(&mut self, state: &CmosState) -> Result<(), DeviceStateError> {
        state.check()?;
        self.index = state.index;
        self.nvram.copy_from_slice(&state.nvram);
        Ok(())
    }

    fn read_reg(&self, reg: u8) -> u8 {
        let now = self.clock.now();
        let days = i64::try_from(now / 86_400).unwrap_or(0);
        let secs = now % 86_400;
        let (y, m, d) = civil_from_days(days);
        let y = u64::try_from(y).unwrap_or(1970);
        match reg {
            SECONDS => bcd(secs % 60),
            MINUTES => bcd(secs / 60 % 60),
            HOURS => bcd(secs / 3600),
            // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
            WEEKDAY => bcd(((days + 4).rem_euclid(7) + 1) as u64),
            DAY => bcd(d),
            MONTH => bcd(m),
            YEAR => bcd(y % 100),
            CENTURY => bcd(y / 100),
            // Divider on, 1024 Hz, never "update in progress".
            STATUS_A => 0x26,
            // 24-hour mode, BCD.
            STATUS_B => 0x02,
            STATUS_C => 0,
            // Valid RAM and time.
            STATUS_D => 0x80,
            r => self.nvram[usize::from(r & 0x7f)],
        }
    }
}

impl<C: Clock> MutDevicePio for Cmos<C> {
    fn pio_read(&mut self, _: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let v = match offset {
            1 => self.read_reg(self.index),
            _ => self.index,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn pio_write(&mut self, _: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            // Bit 7 of the index port masks NMIs; the index is 7 bits.
            0 => self.index = v & 0x7f,
            // The clock and status registers are not NVRAM.
            1 if self.index > STATUS_D && self.index != CENTURY => {
                self.nvram[usize::from(self.index)] = v;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);
    impl Clock for Fixed {
        fn now(&self) -> u64 {
            self.0
        }
    }

    fn read(c: &mut Cmos<Fixed>, reg: u8) -> u8 {
        let mut b = [0u8];
        c.pio_write(PioAddress(0x70), 0, &[reg | 0x80]);
        c.pio_read(PioAddress(0x70), 1, &mut b);
        b[0]
    }

    #[test]
    fn time_is_bcd_and_right() {
        // 2026-11-26 08:38:02 UTC, a Thursday.
        let mut c = Cmos::with_clock(512 << 20, 0, Fixed(1_795_682_282));
        assert_eq!(read(&mut c, SECONDS), 0x02);
        assert_eq!(read(&mut c, MINUTES), 0x38);
        assert_eq!(read(&mut c, HOURS), 0x08);
        assert_eq!(read(&mut c, DAY), 0x26);
        assert_eq!(read(&mut c, MONTH), 0x11);
        assert_eq!(read(&mut c, YEAR), 0x26);
        assert_eq!(read(&mut c, CENTURY), 0x20);
        assert_eq!(read(&mut c, WEEKDAY), 0x05);
        assert_eq!(read(&mut c, STATUS_B), 0x02);
        assert_eq!(read(&mut c, STATUS_D), 0x80);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn memory_size_and_nvram() {
        let mut c = Cmos::with_clock(3 << 30, 1 << 30, Fixed(0));
        let lo = u16::from(read(&mut c, 0x34)) | (u16::from(read(&mut c, 0x35)) << 8);
        assert_eq!(u64::from(lo), ((3u64 << 30) - (16 << 20)) >> 16);
        assert_eq!(read(&mut c, 0x5c), 0x40); // 1 GiB = 0x4000 * 64 KiB
        c.pio_write(PioAddress(0x70), 0, &[0x40]);
        c.pio_write(PioAddress(0x70), 1, &[0x99]);
        assert_eq!(read(&mut c, 0x40), 0x99);
        c.pio_write(PioAddress(0x70), 1, &[]);
        c.pio_write(PioAddress(0x70), 0, &[SECONDS]);
        c.pio_write(PioAddress(0x70), 1, &[0x33]);
        assert_eq!(read(&mut c, SECONDS), 0, "the clock is not NVRAM");
    }

    #[test]
    fn state_round_trips_and_restores_nvram_and_index_not_time() {
        let mut a = Cmos::with_clock(3 << 30, 1 << 30, Fixed(1_000_000));
        a.pio_write(PioAddress(0x70), 0, &[0x40]);
        a.pio_write(PioAddress(0x70), 1, &[0x99]);
        a.pio_write(PioAddress(0x70), 0, &[0x80 | 0x41]);
        let s = a.state();
        assert_eq!(s.index, 0x41, "the NMI-mask bit is not kept");
        let json = serde_json::to_string(&s).unwrap();
        let back: CmosState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        // Another clock and another memory size: the NVRAM comes from the
        // state, the time from the new clock.
        let mut b = Cmos::with_clock(256 << 20, 0, Fixed(2_000_000));
        b.restore(&back).unwrap();
        assert_eq!(b.state(), s);
        let mut d = [0u8];
        b.pio_write(PioAddress(0x70), 0, &[0x41]);
        b.pio_read(PioAddress(0x70), 0, &mut d);
        assert_eq!(d, [0x41]);
        for reg in [0x40, 0x34, 0x35, 0x5c, 0x10] {
            assert_eq!(read(&mut a, reg), read(&mut b, reg), "{reg:#x}");
        }
        assert_ne!(
            read(&mut a, DAY),
            read(&mut b, DAY),
            "host time, not saved time"
        );
    }

    #[test]
    fn malformed_states_are_refused_and_change_nothing() {
        let mut c = Cmos::with_clock(512 << 20, 0, Fixed(0));
        let before = c.state();
        for (s, msg) in [
            (
                CmosState {
                    index: 0,
                    nvram: vec![0; 127],
                },
                "127 bytes of NVRAM, the CMOS has 128",
            ),
            (
                CmosState {
                    index: 0,
                    nvram: vec![0; 4096],
                },
                "4096 bytes",
            ),
            (
                CmosState {
                    index: 0xff,
                    nvram: vec![0; 128],
                },
                "selects register 0xff, the index has 7 bits",
            ),
        ] {
            let e = c.restore(&s).unwrap_err();
            assert!(e.to_string().contains(msg), "{e} / {msg}");
            assert_eq!(c.state(), before);
        }
        let zero = CmosState {
            index: 0,
            nvram: vec![0; 128],
        };
        let json = serde_json::to_string(&zero).unwrap();
        let hex = format!(r#""nvram":"{}""#, "0".repeat(256));
        assert!(json.contains(&hex), "{json}");
        for bad in [r#""nvram":"0""#, r#""nvram":"zz""#, r#""nvram":[0]"#] {
            let j = json.replace(&hex, bad);
            assert!(serde_json::from_str::<CmosState>(&j).is_err(), "{bad}");
        }
        let j = json.replace(r#""index":0"#, r#""index":256"#);
        assert!(serde_json::from_str::<CmosState>(&j).is_err(), "u8 index");
    }
}
