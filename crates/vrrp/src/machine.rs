//! The VRRPv3 state machine of RFC 9568 §6.4, sans IO: no sockets, no clock.
//!
//! The caller feeds it events with the current time ([`Machine::startup`],
//! [`Machine::receive`], [`Machine::handle_timeout`], [`Machine::shutdown`],
//! [`Machine::set_adjustment`]), asks when to wake it next
//! ([`Machine::poll_timeout`]) and carries out what it asks for
//! ([`Machine::poll_action`]). Every timer lives here, gratuitous ARP bursts
//! and refreshes included, so all of the protocol's timing is tested with a
//! simulated clock.
//!
//! Beyond the RFC, and off by configuration: `preempt_delay` (keepalived's),
//! `startup_delay` (a hold-off before a fresh node may become master), and
//! gratuitous ARP bursts, refreshes and re-sends when a lower-priority master
//! is heard (split-brain hygiene, see docs/vrrp.md).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tandem_config::VrrpInstance;

/// RFC 9568's three states ("Active" is called master here, as keepalived
/// and most operators do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
}

/// What the machine asks its driver to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 when resigning).
    SendAdvert { priority: u8 },
    /// Put the virtual IPs on the interface.
    AddVips,
    /// Take the virtual IPs this node added off the interface.
    RemoveVips,
    /// One gratuitous ARP (IPv4) or unsolicited neighbour advertisement
    /// (IPv6) for each virtual IP.
    SendGarp,
    /// The machine is now in this state: run the notify hook, count it.
    Transition(State),
    /// While master, an advert from another master was heard: `yielded`
    /// when it won and this node became backup, otherwise this node answered
    /// with its own advert and gratuitous ARP.
    Conflict {
        peer: IpAddr,
        peer_priority: u8,
        yielded: bool,
    },
}

/// An advert that passed the receive checks, as the machine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// The sender's primary address (the IP source).
    pub src: IpAddr,
    pub priority: u8,
    /// Its Max Advertise Interval.
    pub interval: Duration,
}

/// The settings of one virtual router, taken from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Configured priority, 1..=255 (255: the address owner).
    pub priority: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub startup_delay: Duration,
    pub garp_repeat: u32,
    pub garp_interval: Duration,
    /// Zero: no refresh.
    pub garp_refresh: Duration,
}

impl Params {
    pub fn from_instance(i: &VrrpInstance) -> Self {
        Params {
            priority: i.priority,
            advert_interval: i.advert_interval,
            preempt: i.preempt,
            preempt_delay: i.preempt_delay,
            startup_delay: i.startup_delay,
            garp_repeat: i.garp.repeat,
            garp_interval: i.garp.interval,
            garp_refresh: i.garp.refresh,
        }
    }
}

/// The priority a node advertises: the configured one moved by the tracking
/// adjustment and kept within 1..=254, the range of a non-owner (RFC 9568
/// §5.2.4). The owner (255) is never adjusted, like keepalived.
pub fn effective_priority(configured: u8, adjustment: i32) -> u8 {
    if configured == 255 {
        return 255;
    }
    (i32::from(configured) + adjustment).clamp(1, 254) as u8
}

// The RFC's timing formulas live with the configuration, which derives the
// default `startup_delay` from them.
pub use tandem_config::{master_down_interval, skew_time};

#[derive(Debug)]
pub struct Machine {
    params: Params,
    /// This node's primary address on the interface: the advert source and
    /// the tie-breaker between equal priorities.
    primary: IpAddr,
    state: State,
    priority: u8,
    adjustment: i32,
    /// The master's advert interval as learnt in Backup (RFC 9568 §6.1).
    master_adver_interval: Duration,
    master: Option<IpAddr>,
    master_down_at: Option<Instant>,
    advert_at: Option<Instant>,
    garp_at: Option<Instant>,
    garp_left: u32,
    refresh_at: Option<Instant>,
    /// Since when a lower-priority master has been tolerated (preempt_delay).
    lower_since: Option<Instant>,
    actions: VecDeque<Action>,
}

impl Machine {
    pub fn new(params: Params, primary: IpAddr) -> Self {
        Machine {
            params,
            primary,
            state: State::Initialize,
            priority: params.priority,
            adjustment: 0,
            master_adver_interval: params.advert_interval,
            master: None,
            master_down_at: None,
            advert_at: None,
            garp_at: None,
            garp_left: 0,
            refresh_at: None,
            lower_since: None,
            actions: VecDeque::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The priority this node advertises now.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The master as far as this node knows: itself, the sender of the last
    /// advert it accepted, or nobody.
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// The interval Backup times the master with (learnt from its adverts).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Master_Down_Interval as Backup uses it now.
    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(self.priority, self.master_adver_interval)
    }

    /// The next thing the driver must do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.master_down_at,
            self.advert_at,
            self.garp_at,
            self.refresh_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// RFC 9568 §6.4.1: the owner becomes master at once; anyone else
    /// listens as backup for Master_Down_Interval, plus `startup_delay`.
    pub fn startup(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        if self.priority == 255 {
            self.become_master(now);
        } else {
            self.master_adver_interval = self.params.advert_interval;
            self.master_down_at =
                Some(now + self.master_down_interval() + self.params.startup_delay);
            self.enter(State::Backup);
        }
    }

    /// RFC 9568 §6.4.2 / §6.4.3 on Shutdown: a master resigns with priority
    /// 0 so a backup takes over after its Skew_Time, and drops the VIPs.
    pub fn shutdown(&mut self, _now: Instant) {
        match self.state {
            State::Initialize => return,
            State::Master => {
                self.actions.push_back(Action::SendAdvert { priority: 0 });
                self.actions.push_back(Action::RemoveVips);
            }
            State::Backup => {}
        }
        self.clear_timers();
        self.master = None;
        self.enter(State::Initialize);
    }

    /// A changed tracking adjustment. Not a fault: only the advertised
    /// priority moves. A master tells its backups at once, so one that may
    /// now preempt starts counting without waiting for the next advert.
    pub fn set_adjustment(&mut self, now: Instant, adjustment: i32) {
        self.adjustment = adjustment;
        let p = effective_priority(self.params.priority, adjustment);
        if p == self.priority {
            return;
        }
        self.priority = p;
        if self.state == State::Master {
            self.send_advert(now);
        }
    }

    /// An advert for this virtual router that passed the receive checks.
    pub fn receive(&mut self, now: Instant, heard: &Heard) {
        match self.state {
            State::Initialize => {}
            State::Backup => self.receive_in_backup(now, heard),
            State::Master => self.receive_in_master(now, heard),
        }
    }

    fn receive_in_backup(&mut self, now: Instant, heard: &Heard) {
        if heard.priority == 0 {
            // The master resigned: take over after Skew_Time, unless a
            // better backup does it first.
            self.master = None;
            self.master_down_at = Some(now + skew_time(self.priority, self.master_adver_interval));
            return;
        }
        let lower = heard.priority < self.priority;
        if lower && self.params.preempt {
            let since = *self.lower_since.get_or_insert(now);
            if now >= since + self.params.preempt_delay {
                // Discard it: the master-down timer runs out and this node preempts.
                return;
            }
        } else {
            self.lower_since = None;
        }
        self.master = Some(heard.src);
        self.master_adver_interval = heard.interval;
        self.master_down_at = Some(now + self.master_down_interval());
    }

    fn receive_in_master(&mut self, now: Instant, heard: &Heard) {
        if heard.priority == 0 {
            // Someone resigned while this node is master: say who is.
            self.send_advert(now);
            return;
        }
        let wins = heard.priority > self.priority
            || (heard.priority == self.priority && wider(heard.src) > wider(self.primary));
        self.actions.push_back(Action::Conflict {
            peer: heard.src,
            peer_priority: heard.priority,
            yielded: wins,
        });
        if wins {
            self.clear_timers();
            self.master = Some(heard.src);
            self.master_adver_interval = heard.interval;
            self.master_down_at = Some(now + self.master_down_interval());
            self.actions.push_back(Action::RemoveVips);
            self.enter(State::Backup);
        } else {
            // RFC 9568 §6.4.3: assert mastership at once; and refresh the
            // neighbours' ARP caches, which the other master may have taken.
            self.send_advert(now);
            if self.garp_left == 0 {
                self.start_garp_burst(now);
            }
        }
    }

    /// Fires every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.master_down_at.is_some_and(|t| t <= now) {
            self.master_down_at = None;
            if self.state == State::Backup {
                self.become_master(now);
            }
        }
        if self.advert_at.is_some_and(|t| t <= now) {
            self.send_advert(now);
        }
        self.handle_garp(now);
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.actions.push_back(Action::SendGarp);
            self.refresh_at = Some(now + self.params.garp_refresh);
        }
    }

    fn become_master(&mut self, now: Instant) {
        self.clear_timers();
        self.master = Some(self.primary);
        self.actions.push_back(Action::AddVips);
        self.send_advert(now);
        self.start_garp_burst(now);
        if !self.params.garp_refresh.is_zero() {
            self.refresh_at = Some(now + self.params.garp_refresh);
        }
        self.enter(State::Master);
    }

    fn send_advert(&mut self, now: Instant) {
        self.actions.push_back(Action::SendAdvert {
            priority: self.priority,
        });
        self.advert_at = Some(now + self.params.advert_interval);
    }

    /// The first at once, the rest `garp_interval` apart.
    fn start_garp_burst(&mut self, now: Instant) {
        self.garp_left = self.params.garp_repeat;
        self.garp_at = Some(now);
        self.handle_garp(now);
    }

    /// Sends the GARPs that are due; with a zero interval the whole burst.
    fn handle_garp(&mut self, now: Instant) {
        while self.garp_at.is_some_and(|t| t <= now) {
            self.actions.push_back(Action::SendGarp);
            self.garp_left = self.garp_left.saturating_sub(1);
            self.garp_at = (self.garp_left > 0).then(|| now + self.params.garp_interval);
        }
    }

    fn clear_timers(&mut self) {
        self.master_down_at = None;
        self.advert_at = None;
        self.garp_at = None;
        self.garp_left = 0;
        self.refresh_at = None;
        self.lower_since = None;
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.actions.push_back(Action::Transition(state));
    }
}

/// Addresses as unsigned integers in network byte order (RFC 9568 §6.4.3).
fn wider(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn params(priority: u8) -> Params {
        Params {
            priority,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            startup_delay: Duration::ZERO,
            garp_repeat: 1,
            garp_interval: Duration::ZERO,
            garp_refresh: Duration::ZERO,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A machine and a simulated clock.
    struct Sim {
        m: Machine,
        t0: Instant,
        now: Instant,
    }

    impl Sim {
        fn new(p: Params) -> Self {
            Self::at(p, "198.18.0.10")
        }

        fn at(p: Params, primary: &str) -> Self {
            let t0 = Instant::now();
            Sim {
                m: Machine::new(p, ip(primary)),
                t0,
                now: t0,
            }
        }

        fn actions(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.m.poll_action()).collect()
        }

        /// Advances the clock to `t` after start, firing every timer on the way.
        fn run_to(&mut self, t: Duration) -> Vec<Action> {
            let end = self.t0 + t;
            let mut out = Vec::new();
            while let Some(at) = self.m.poll_timeout().filter(|at| *at <= end) {
                self.now = self.now.max(at);
                self.m.handle_timeout(self.now);
                out.extend(self.actions());
            }
            self.now = end;
            out
        }

        fn hear(&mut self, src: &str, priority: u8, interval: Duration) -> Vec<Action> {
            let h = Heard {
                src: ip(src),
                priority,
                interval,
            };
            self.m.receive(self.now, &h);
            self.actions()
        }

        fn elapsed_to_next_timeout(&self) -> Option<Duration> {
            self.m.poll_timeout().map(|t| t - self.t0)
        }
    }

    fn mastering() -> Vec<Action> {
        vec![
            Action::AddVips,
            Action::SendAdvert { priority: 100 },
            Action::SendGarp,
            Action::Transition(State::Master),
        ]
    }

    #[test]
    fn timers_follow_rfc_9568() {
        let s = Duration::from_secs(1);
        assert_eq!(skew_time(100, s), Duration::from_micros(609_375));
        assert_eq!(
            master_down_interval(100, s),
            Duration::from_micros(3_609_375)
        );
        assert_eq!(
            master_down_interval(255, s),
            Duration::from_nanos(3_003_906_250)
        );
        let cs10 = Duration::from_millis(100);
        assert_eq!(
            master_down_interval(150, cs10),
            Duration::from_nanos(341_406_250)
        );
        assert_eq!(
            master_down_interval(1, Duration::from_millis(10)),
            Duration::from_nanos(39_960_937)
        );
    }

    #[test]
    fn effective_priority_is_clamped_and_the_owner_is_never_adjusted() {
        assert_eq!(effective_priority(150, -60), 90);
        assert_eq!(effective_priority(50, -60), 1);
        assert_eq!(effective_priority(200, 100), 254);
        assert_eq!(effective_priority(255, -60), 255);
        assert_eq!(effective_priority(100, 0), 100);
    }

    #[test]
    fn initialize_startup_becomes_backup_and_masters_after_master_down_interval() {
        let mut s = Sim::new(params(100));
        assert_eq!(s.m.state(), State::Initialize);
        s.m.startup(s.now);
        assert_eq!(s.actions(), vec![Action::Transition(State::Backup)]);
        assert_eq!(
            s.elapsed_to_next_timeout(),
            Some(Duration::from_micros(3_609_375))
        );
        assert!(s.run_to(Duration::from_micros(3_609_374)).is_empty());
        assert_eq!(s.run_to(Duration::from_micros(3_609_375)), mastering());
        assert_eq!(s.m.state(), State::Master);
        assert_eq!(s.m.master(), Some(ip("198.18.0.10")));
    }

    #[test]
    fn initialize_owner_becomes_master_at_once() {
        let mut p = params(255);
        p.startup_delay = Duration::from_secs(10);
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        assert_eq!(
            s.actions(),
            vec![
                Action::AddVips,
                Action::SendAdvert { priority: 255 },
                Action::SendGarp,
                Action::Transition(State::Master),
            ]
        );
    }

    #[test]
    fn startup_delay_holds_a_fresh_node_back() {
        let mut p = params(100);
        p.startup_delay = Duration::from_secs(2);
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        s.actions();
        assert!(s.run_to(Duration::from_millis(5_609)).is_empty());
        assert_eq!(s.run_to(Duration::from_millis(5_610)), mastering());
    }

    #[test]
    fn startup_delay_ends_when_a_master_is_heard() {
        let mut p = params(100);
        p.startup_delay = Duration::from_secs(30);
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_secs(1));
        s.hear("198.18.0.20", 150, Duration::from_secs(1));
        // From now on only the RFC's timer counts: the master dies silently.
        assert!(s.run_to(Duration::from_millis(4_609)).is_empty());
        assert_eq!(s.run_to(Duration::from_millis(4_610)), mastering());
    }

    #[test]
    fn backup_resets_its_timer_on_each_advert_and_learns_the_masters_interval() {
        let mut s = Sim::new(params(100));
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_secs(3));
        let fast = Duration::from_millis(100);
        assert!(s.hear("198.18.0.20", 150, fast).is_empty());
        assert_eq!(s.m.master(), Some(ip("198.18.0.20")));
        assert_eq!(s.m.master_adver_interval(), fast);
        // 3 × 100ms + (256 − 100) × 100ms / 256, counted from the advert.
        assert_eq!(
            s.m.master_down_interval(),
            Duration::from_nanos(360_937_500)
        );
        assert_eq!(
            s.elapsed_to_next_timeout(),
            Some(Duration::from_secs(3) + Duration::from_nanos(360_937_500))
        );
        assert!(s.run_to(Duration::from_millis(3_360)).is_empty());
        assert_eq!(s.run_to(Duration::from_millis(3_361)), mastering());
        // As master it advertises its own interval, not the learnt one.
        assert_eq!(
            s.run_to(Duration::from_millis(4_361)),
            vec![Action::SendAdvert { priority: 100 }]
        );
    }

    #[test]
    fn backup_on_priority_zero_takes_over_after_skew_time() {
        let mut s = Sim::new(params(100));
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_secs(1));
        s.hear("198.18.0.20", 150, Duration::from_secs(1));
        assert!(s.hear("198.18.0.20", 0, Duration::from_secs(1)).is_empty());
        assert_eq!(s.m.master(), None);
        // Skew_Time for priority 100 at 1s: 609.375 ms.
        assert!(s.run_to(Duration::from_micros(1_609_374)).is_empty());
        assert_eq!(s.run_to(Duration::from_micros(1_609_375)), mastering());
    }

    #[test]
    fn backup_with_preempt_discards_a_lower_priority_master_and_takes_over() {
        let mut s = Sim::new(params(100));
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_secs(1));
        s.hear("198.18.0.20", 150, Duration::from_secs(1));
        // The master's priority drops (its service failed): it keeps
        // advertising, but below ours, so its adverts no longer count.
        for t in 2..=4 {
            s.run_to(Duration::from_secs(t));
            assert!(s.hear("198.18.0.20", 90, Duration::from_secs(1)).is_empty());
        }
        // Master_Down_Interval after the last advert that counted (t = 1 s).
        assert_eq!(s.run_to(Duration::from_millis(4_610)), mastering());
    }

    #[test]
    fn backup_without_preempt_keeps_a_lower_priority_master() {
        let mut p = params(100);
        p.preempt = false;
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        s.actions();
        for t in 1..=20 {
            s.run_to(Duration::from_secs(t));
            assert!(s.hear("198.18.0.20", 50, Duration::from_secs(1)).is_empty());
        }
        assert_eq!(s.m.state(), State::Backup);
        assert_eq!(s.m.master(), Some(ip("198.18.0.20")));
    }

    #[test]
    fn preempt_delay_tolerates_a_lower_master_for_that_long_first() {
        let mut p = params(100);
        p.preempt_delay = Duration::from_secs(5);
        // First lower advert at 1 s; tolerated through 5 s (< 1 + 5); the one
        // at 6 s is discarded, so the timer from 5 s runs out at 8.609 s.
        let mut s2 = Sim::new(p);
        s2.m.startup(s2.now);
        s2.actions();
        for t in 1..=6 {
            s2.run_to(Duration::from_secs(t));
            s2.hear("198.18.0.20", 50, Duration::from_secs(1));
        }
        assert!(s2.run_to(Duration::from_millis(8_609)).is_empty());
        assert_eq!(s2.run_to(Duration::from_millis(8_610)), mastering());
    }

    #[test]
    fn preempt_delay_starts_over_when_a_better_master_returns() {
        let mut p = params(100);
        p.preempt_delay = Duration::from_secs(3);
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_secs(1));
        s.hear("198.18.0.20", 50, Duration::from_secs(1));
        s.run_to(Duration::from_secs(2));
        s.hear("198.18.0.20", 150, Duration::from_secs(1));
        s.run_to(Duration::from_secs(3));
        s.hear("198.18.0.20", 50, Duration::from_secs(1));
        s.run_to(Duration::from_millis(5_900));
        s.hear("198.18.0.20", 50, Duration::from_secs(1));
        assert_eq!(s.m.state(), State::Backup, "counted from 3 s, not 1 s");
    }

    #[test]
    fn backup_accepts_equal_priority_whatever_the_address() {
        let mut s = Sim::at(params(100), "198.18.0.200");
        s.m.startup(s.now);
        s.actions();
        for t in 1..=10 {
            s.run_to(Duration::from_secs(t));
            assert!(s
                .hear("198.18.0.20", 100, Duration::from_secs(1))
                .is_empty());
        }
        assert_eq!(s.m.state(), State::Backup);
    }

    fn master_sim(priority: u8, primary: &str) -> Sim {
        let mut s = Sim::at(params(priority), primary);
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_secs(4));
        assert_eq!(s.m.state(), State::Master);
        s
    }

    #[test]
    fn master_sends_an_advert_every_interval() {
        let mut s = master_sim(100, "198.18.0.10");
        let start = s.now - s.t0;
        let out = s.run_to(start + Duration::from_millis(3_100));
        assert_eq!(out, vec![Action::SendAdvert { priority: 100 }; 3]);
    }

    #[test]
    fn master_yields_to_a_higher_priority() {
        let mut s = master_sim(100, "198.18.0.10");
        let out = s.hear("198.18.0.20", 150, Duration::from_millis(200));
        assert_eq!(
            out,
            vec![
                Action::Conflict {
                    peer: ip("198.18.0.20"),
                    peer_priority: 150,
                    yielded: true
                },
                Action::RemoveVips,
                Action::Transition(State::Backup),
            ]
        );
        assert_eq!(s.m.master(), Some(ip("198.18.0.20")));
        assert_eq!(s.m.master_adver_interval(), Duration::from_millis(200));
        // Backup now times the new master with its interval.
        let down = master_down_interval(100, Duration::from_millis(200));
        assert_eq!(s.m.poll_timeout(), Some(s.now + down));
    }

    #[test]
    fn equal_priorities_are_won_by_the_higher_primary_address() {
        let mut high = master_sim(100, "198.18.0.10");
        let out = high.hear("198.18.0.9", 100, Duration::from_secs(1));
        assert_eq!(high.m.state(), State::Master);
        assert!(out.contains(&Action::SendAdvert { priority: 100 }));

        let mut low = master_sim(100, "198.18.0.10");
        low.hear("198.18.0.11", 100, Duration::from_secs(1));
        assert_eq!(low.m.state(), State::Backup);

        // Unsigned, network byte order: 198.18.0.200 > 198.18.0.30.
        let mut s = master_sim(100, "198.18.0.30");
        s.hear("198.18.0.200", 100, Duration::from_secs(1));
        assert_eq!(s.m.state(), State::Backup);

        let mut v6 = master_sim(100, "fe80::1");
        v6.hear("fe80::2", 100, Duration::from_secs(1));
        assert_eq!(v6.m.state(), State::Backup);
    }

    #[test]
    fn master_hearing_a_lower_priority_answers_at_once_and_resends_garp() {
        let mut p = params(150);
        p.garp_repeat = 3;
        p.garp_interval = Duration::from_millis(200);
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_secs(5));
        assert_eq!(s.m.state(), State::Master);
        s.run_to(Duration::from_millis(5_500));
        let out = s.hear("198.18.0.20", 100, Duration::from_secs(1));
        assert_eq!(
            out,
            vec![
                Action::Conflict {
                    peer: ip("198.18.0.20"),
                    peer_priority: 100,
                    yielded: false
                },
                Action::SendAdvert { priority: 150 },
                Action::SendGarp,
            ]
        );
        // The advert timer restarts from the answer; the burst goes on.
        let out = s.run_to(Duration::from_millis(6_499));
        assert_eq!(out, vec![Action::SendGarp, Action::SendGarp]);
        assert_eq!(
            s.run_to(Duration::from_millis(6_500)),
            vec![Action::SendAdvert { priority: 150 }]
        );
    }

    #[test]
    fn master_answers_a_resignation_with_an_advert() {
        let mut s = master_sim(100, "198.18.0.10");
        let out = s.hear("198.18.0.20", 0, Duration::from_secs(1));
        assert_eq!(out, vec![Action::SendAdvert { priority: 100 }]);
        assert_eq!(s.m.state(), State::Master);
    }

    #[test]
    fn master_shutdown_resigns_with_priority_zero() {
        let mut s = master_sim(100, "198.18.0.10");
        s.m.shutdown(s.now);
        assert_eq!(
            s.actions(),
            vec![
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                Action::Transition(State::Initialize),
            ]
        );
        assert_eq!(s.m.poll_timeout(), None);
        s.m.shutdown(s.now);
        assert!(s.actions().is_empty(), "a second shutdown does nothing");
    }

    #[test]
    fn backup_shutdown_goes_quietly() {
        let mut s = Sim::new(params(100));
        s.m.startup(s.now);
        s.actions();
        s.m.shutdown(s.now);
        assert_eq!(s.actions(), vec![Action::Transition(State::Initialize)]);
        assert_eq!(s.m.poll_timeout(), None);
    }

    #[test]
    fn initialize_ignores_adverts_and_timers() {
        let mut s = Sim::new(params(100));
        assert!(s
            .hear("198.18.0.20", 150, Duration::from_secs(1))
            .is_empty());
        assert_eq!(s.m.poll_timeout(), None);
        assert!(s.run_to(Duration::from_secs(100)).is_empty());
    }

    #[test]
    fn owner_collisions_are_decided_by_address_and_reported() {
        let mut s = master_sim(255, "198.18.0.10");
        let out = s.hear("198.18.0.20", 255, Duration::from_secs(1));
        assert_eq!(
            out[0],
            Action::Conflict {
                peer: ip("198.18.0.20"),
                peer_priority: 255,
                yielded: true
            }
        );
    }

    #[test]
    fn tracking_moves_the_priority_and_a_master_advertises_it_at_once() {
        let mut s = master_sim(150, "198.18.0.10");
        s.m.set_adjustment(s.now, -60);
        assert_eq!(s.m.priority(), 90);
        assert_eq!(s.actions(), vec![Action::SendAdvert { priority: 90 }]);
        s.m.set_adjustment(s.now, -60);
        assert!(s.actions().is_empty(), "no change, no advert");
        // Still master: a priority change is not a fault.
        assert_eq!(s.m.state(), State::Master);
        // A backup at 100 preempts it: its adverts are discarded there.
        let mut b = Sim::new(params(100));
        b.m.startup(b.now);
        b.actions();
        b.run_to(Duration::from_secs(1));
        b.hear("198.18.0.10", 150, Duration::from_secs(1));
        b.run_to(Duration::from_secs(2));
        b.hear("198.18.0.10", 90, Duration::from_secs(1));
        assert_eq!(b.run_to(Duration::from_millis(4_610)), mastering());
        // Restored: the first node outranks the new master again and takes back.
        s.m.set_adjustment(s.now, 0);
        assert_eq!(s.m.priority(), 150);
    }

    #[test]
    fn a_backup_whose_priority_rises_preempts_the_master() {
        let mut s = Sim::new(params(100));
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_secs(1));
        s.hear("198.18.0.20", 120, Duration::from_secs(1));
        s.m.set_adjustment(s.now, 50);
        assert!(s.actions().is_empty());
        s.run_to(Duration::from_secs(2));
        assert!(s
            .hear("198.18.0.20", 120, Duration::from_secs(1))
            .is_empty());
        // 150 > 120: that advert was discarded; taken over 3.6 s after the last one that counted.
        assert_eq!(s.run_to(Duration::from_millis(4_610)).len(), 4);
        assert_eq!(s.m.state(), State::Master);
    }

    #[test]
    fn garp_bursts_and_refreshes_follow_their_settings() {
        let mut p = params(255);
        p.garp_repeat = 3;
        p.garp_interval = Duration::from_millis(100);
        p.garp_refresh = Duration::from_secs(60);
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        let first = s.actions();
        assert_eq!(first.iter().filter(|a| **a == Action::SendGarp).count(), 1);
        let garps = |v: &[Action]| v.iter().filter(|a| **a == Action::SendGarp).count();
        assert_eq!(garps(&s.run_to(Duration::from_millis(150))), 1);
        assert_eq!(garps(&s.run_to(Duration::from_millis(250))), 1);
        assert_eq!(garps(&s.run_to(Duration::from_secs(59))), 0);
        assert_eq!(garps(&s.run_to(Duration::from_secs(60))), 1);
        assert_eq!(garps(&s.run_to(Duration::from_secs(180))), 2);

        let mut p = params(255);
        p.garp_repeat = 4;
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        assert_eq!(
            garps(&s.actions()),
            4,
            "a zero interval sends them back to back"
        );
    }

    #[test]
    fn leaving_master_cancels_pending_garps() {
        let mut p = params(100);
        p.garp_repeat = 5;
        p.garp_interval = Duration::from_millis(100);
        p.garp_refresh = Duration::from_secs(1);
        let mut s = Sim::new(p);
        s.m.startup(s.now);
        s.actions();
        s.run_to(Duration::from_micros(3_609_375));
        s.hear("198.18.0.20", 200, Duration::from_secs(1));
        // Only the new master's adverts keep it backup: nothing of ours fires.
        for t in 1..=5 {
            let out = s.run_to(Duration::from_micros(3_609_375) + Duration::from_secs(t) - MS);
            assert!(out.is_empty(), "{out:?}");
            s.hear("198.18.0.20", 200, Duration::from_secs(1));
        }
    }

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Ev {
        Wait(u64),
        Hear(u8, u8, u16),
        Adjust(i32),
        Shutdown,
        Startup,
    }

    fn event() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0u64..3_000).prop_map(Ev::Wait),
            (0u8..4, any::<u8>(), 1u16..200).prop_map(|(h, p, i)| Ev::Hear(h, p, i)),
            (-300i32..300).prop_map(Ev::Adjust),
            Just(Ev::Shutdown),
            Just(Ev::Startup),
        ]
    }

    proptest! {
        /// Whatever happens, the VIPs are on exactly while master, adverts
        /// go out only from a master (priority 0 only when it resigns), the
        /// advertised priority stays in range and no timer lies in the past.
        #[test]
        fn any_sequence_of_events_keeps_the_invariants(
            priority in 1u8..=255,
            preempt in any::<bool>(),
            delay_ms in prop_oneof![Just(0u64), 0u64..2_000],
            events in prop::collection::vec(event(), 1..60),
        ) {
            let mut p = params(priority);
            p.preempt = preempt;
            p.preempt_delay = Duration::from_millis(delay_ms);
            p.startup_delay = Duration::from_millis(delay_ms);
            p.advert_interval = Duration::from_millis(100);
            p.garp_repeat = 3;
            p.garp_interval = Duration::from_millis(50);
            p.garp_refresh = Duration::from_secs(1);
            let mut s = Sim::new(p);
            let mut vips_on = false;
            let mut t = Duration::ZERO;
            for ev in events {
                let was_master = s.m.state() == State::Master;
                let out = match ev {
                    Ev::Wait(ms) => {
                        t += Duration::from_millis(ms);
                        s.run_to(t)
                    }
                    Ev::Hear(h, prio, cs) => {
                        let src = format!("198.18.0.{}", 8 + h);
                        s.hear(&src, prio, Duration::from_millis(u64::from(cs) * 10))
                    }
                    Ev::Adjust(a) => {
                        s.m.set_adjustment(s.now, a);
                        s.actions()
                    }
                    Ev::Shutdown => {
                        s.m.shutdown(s.now);
                        s.actions()
                    }
                    Ev::Startup => {
                        s.m.startup(s.now);
                        s.actions()
                    }
                };
                let mut master = was_master;
                for a in &out {
                    match a {
                        Action::AddVips => {
                            prop_assert!(!vips_on);
                            vips_on = true;
                        }
                        Action::RemoveVips => {
                            prop_assert!(vips_on);
                            vips_on = false;
                        }
                        Action::SendAdvert { priority: 0 } => prop_assert!(matches!(ev, Ev::Shutdown)),
                        Action::SendAdvert { priority: q } => {
                            prop_assert!(master || matches!(ev, Ev::Startup | Ev::Wait(_)));
                            prop_assert_eq!(*q, s.m.priority());
                        }
                        Action::Transition(st) => master = *st == State::Master,
                        Action::SendGarp | Action::Conflict { .. } => {}
                    }
                }
                prop_assert_eq!(vips_on, s.m.state() == State::Master);
                let q = s.m.priority();
                let in_range = if priority == 255 { q == 255 } else { (1..=254).contains(&q) };
                prop_assert!(in_range, "priority {}", q);
                if let Some(next) = s.m.poll_timeout() {
                    prop_assert!(next >= s.now);
                }
            }
        }
    }
}
