//! Business hours: whether a queue takes new work at a time.
//!
//! Time zones come from the tz database compiled into the binary (never the host's), so every
//! node answers the same for the same command time.

use crate::command::{BusinessHours, OpenInterval, Rejection, Weekday};
use crate::limits;

/// Minutes since local midnight, parsed from `HH:MM` (`24:00` allowed as a closing time).
fn parse_minutes(field: &str, value: &str) -> Result<u32, Rejection> {
    let bad = || Rejection::invalid(field, format!("{value:?} is not a time of day as HH:MM"));
    let (hours, minutes) = value.split_once(':').ok_or_else(bad)?;
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(bad());
    }
    let hours: u32 = hours.parse().map_err(|_| bad())?;
    let minutes: u32 = minutes.parse().map_err(|_| bad())?;
    if minutes > 59 || hours > 24 || (hours == 24 && minutes != 0) {
        return Err(bad());
    }
    Ok(hours * 60 + minutes)
}

/// An interval's opening and closing minutes. A closing time at or before the opening time
/// closes on the next day (`22:00`–`06:00` is a night shift; `09:00`–`09:00` is 24 hours).
fn interval_minutes(interval: &OpenInterval) -> Result<(u32, u32), Rejection> {
    let open = parse_minutes("business_hours.open", &interval.open)?;
    if open >= 24 * 60 {
        return Err(Rejection::invalid(
            "business_hours.open",
            "24:00 is a closing time only",
        ));
    }
    let close = parse_minutes("business_hours.close", &interval.close)?;
    Ok((open, close))
}

/// The day before `day`.
fn previous(day: Weekday) -> Weekday {
    match day {
        Weekday::Mon => Weekday::Sun,
        Weekday::Tue => Weekday::Mon,
        Weekday::Wed => Weekday::Tue,
        Weekday::Thu => Weekday::Wed,
        Weekday::Fri => Weekday::Thu,
        Weekday::Sat => Weekday::Fri,
        Weekday::Sun => Weekday::Sat,
    }
}

/// Checks that the hours name a known time zone and well-formed intervals.
pub fn check(hours: &BusinessHours) -> Result<(), Rejection> {
    jiff::tz::TimeZone::get(&hours.time_zone).map_err(|_| {
        Rejection::invalid(
            "business_hours.time_zone",
            format!("{:?} is not a known IANA time zone", hours.time_zone),
        )
    })?;
    if hours.intervals.len() > limits::OPEN_INTERVALS_MAX {
        return Err(Rejection::invalid(
            "business_hours.intervals",
            format!("more than {} intervals", limits::OPEN_INTERVALS_MAX),
        ));
    }
    for interval in &hours.intervals {
        if interval.days.is_empty() {
            return Err(Rejection::invalid(
                "business_hours.days",
                "an interval needs at least one day",
            ));
        }
        interval_minutes(interval)?;
    }
    Ok(())
}

/// Whether `at_ms` (ms since the Unix epoch) falls inside the hours. Hours that fail
/// [`check`] are never open.
pub fn is_open(hours: &BusinessHours, at_ms: u64) -> bool {
    let Ok(zone) = jiff::tz::TimeZone::get(&hours.time_zone) else {
        return false;
    };
    let Ok(at) = jiff::Timestamp::from_millisecond(i64::try_from(at_ms).unwrap_or(i64::MAX)) else {
        return false;
    };
    let local = at.to_zoned(zone);
    let day = match local.weekday() {
        jiff::civil::Weekday::Monday => Weekday::Mon,
        jiff::civil::Weekday::Tuesday => Weekday::Tue,
        jiff::civil::Weekday::Wednesday => Weekday::Wed,
        jiff::civil::Weekday::Thursday => Weekday::Thu,
        jiff::civil::Weekday::Friday => Weekday::Fri,
        jiff::civil::Weekday::Saturday => Weekday::Sat,
        jiff::civil::Weekday::Sunday => Weekday::Sun,
    };
    let minute =
        u32::try_from(local.hour()).unwrap_or(0) * 60 + u32::try_from(local.minute()).unwrap_or(0);
    hours.intervals.iter().any(|interval| {
        let Ok((open, close)) = interval_minutes(interval) else {
            return false;
        };
        if open < close {
            interval.days.contains(&day) && open <= minute && minute < close
        } else {
            // Runs past midnight: from `open` on one of its days to `close` the day after.
            (interval.days.contains(&day) && minute >= open)
                || (interval.days.contains(&previous(day)) && minute < close)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekdays_nine_to_five(zone: &str) -> BusinessHours {
        BusinessHours {
            time_zone: zone.into(),
            intervals: vec![OpenInterval {
                days: vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                ],
                open: "09:00".into(),
                close: "17:00".into(),
            }],
        }
    }

    fn ms(rfc3339: &str) -> u64 {
        let at: jiff::Timestamp = rfc3339.parse().unwrap();
        at.as_millisecond() as u64
    }

    #[test]
    fn open_and_closed_follow_the_local_time_zone() {
        let paris = weekdays_nine_to_five("Europe/Paris");
        // Monday 2026-11-23, 09:30 in Paris is 08:30 UTC (CET, UTC+1).
        assert!(is_open(&paris, ms("2026-11-23T08:30:00Z")));
        // 08:30 in Paris (07:30 UTC) is before opening.
        assert!(!is_open(&paris, ms("2026-11-23T07:30:00Z")));
        // 17:00 is closing time, exclusive.
        assert!(!is_open(&paris, ms("2026-11-23T16:00:00Z")));
        // Saturday.
        assert!(!is_open(&paris, ms("2026-11-28T10:00:00Z")));
        // The same instant is a different local time in New York (03:30, closed).
        let new_york = weekdays_nine_to_five("America/New_York");
        assert!(!is_open(&new_york, ms("2026-11-23T08:30:00Z")));
        assert!(is_open(&new_york, ms("2026-11-23T15:00:00Z")));
    }

    #[test]
    fn bad_hours_are_rejected() {
        let mut hours = weekdays_nine_to_five("Mars/Olympus_Mons");
        assert!(check(&hours).is_err());
        hours.time_zone = "UTC".into();
        assert!(check(&hours).is_ok());
        for (open, close) in [("9:00", "17:00"), ("24:00", "09:00"), ("24:30", "25:00")] {
            hours.intervals[0].open = open.into();
            hours.intervals[0].close = close.into();
            assert!(check(&hours).is_err(), "{open}-{close} accepted");
        }
        hours.intervals[0].open = "00:00".into();
        hours.intervals[0].close = "24:00".into();
        assert!(check(&hours).is_ok());
        hours.intervals[0].days.clear();
        assert!(check(&hours).is_err());
    }

    #[test]
    fn an_interval_closing_before_it_opens_runs_past_midnight() {
        let mut night = weekdays_nine_to_five("UTC");
        night.intervals[0].days = vec![Weekday::Fri];
        night.intervals[0].open = "22:00".into();
        night.intervals[0].close = "06:00".into();
        assert!(check(&night).is_ok());
        // Friday 2026-11-27 23:00 and Saturday 05:59 are inside; Saturday 06:00 and 23:00,
        // and Friday 05:00 (Thursday is not a day of the interval), are not.
        assert!(is_open(&night, ms("2026-11-27T23:00:00Z")));
        assert!(is_open(&night, ms("2026-11-28T05:59:00Z")));
        assert!(!is_open(&night, ms("2026-11-28T06:00:00Z")));
        assert!(!is_open(&night, ms("2026-11-28T23:00:00Z")));
        assert!(!is_open(&night, ms("2026-11-27T05:00:00Z")));
        // Equal times: 24 hours from the opening.
        night.intervals[0].close = "22:00".into();
        assert!(is_open(&night, ms("2026-11-28T21:59:00Z")));
        assert!(!is_open(&night, ms("2026-11-28T22:00:00Z")));
    }
}
