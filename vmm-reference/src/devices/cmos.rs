//! The MC146818 CMOS RTC at ports 0x70/0x71: wall-clock time and memory size.
//!
//! vm-superio only has the PL031 RTC (Arm); x86 guests read the CMOS one.

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

/// The CMOS RTC and its 128 bytes of NVRAM.
#[derive(Debug)]
pub struct Cmos<C: Clock = HostClock> {
    index: u8,
    nvram: [u8; 128],
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
}
