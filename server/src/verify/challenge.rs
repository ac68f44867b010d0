//! Nonces handed to one agent stream: fresh 32-byte values, each answerable
//! once, until it expires. Pure bookkeeping (time comes in as `Instant`).

use rand::RngCore;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use trustpool_evidence::reason::{codes, Reason};

/// How long an agent has to answer a challenge.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(30);
/// How many answered nonces are remembered to name a replay precisely.
const REMEMBERED: usize = 32;
/// At most this many challenges may be outstanding on one stream.
const MAX_OUTSTANDING: usize = 4;

/// A challenge the server sent and has not seen answered.
#[derive(Debug, Clone)]
pub struct Outstanding {
    /// The nonce.
    pub nonce: [u8; 32],
    /// PCR selection asked for (sha256 bank).
    pub pcrs: Vec<u8>,
    /// When it was issued.
    pub issued: Instant,
}

/// The challenges of one stream.
#[derive(Debug, Default)]
pub struct ChallengeBook {
    outstanding: Vec<Outstanding>,
    answered: VecDeque<[u8; 32]>,
}

impl ChallengeBook {
    /// Issues a fresh challenge for `pcrs`. The oldest outstanding challenge is
    /// dropped when too many are pending (a stuck agent cannot grow the book).
    pub fn issue(&mut self, pcrs: Vec<u8>, now: Instant, rng: &mut impl RngCore) -> Outstanding {
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        if self.outstanding.len() >= MAX_OUTSTANDING {
            self.outstanding.remove(0);
        }
        let c = Outstanding {
            nonce,
            pcrs,
            issued: now,
        };
        self.outstanding.push(c.clone());
        c
    }

    /// True when a challenge is pending and not expired.
    pub fn has_pending(&self, now: Instant) -> bool {
        self.outstanding
            .iter()
            .any(|c| now.duration_since(c.issued) < CHALLENGE_TTL)
    }

    /// When the last pending challenge expires (`None` when none was issued
    /// or all were answered).
    pub fn pending_until(&self) -> Option<Instant> {
        self.outstanding
            .iter()
            .map(|c| c.issued + CHALLENGE_TTL)
            .max()
    }

    /// Takes the challenge answered by `nonce`: it can never be used again.
    pub fn take(&mut self, nonce: &[u8], now: Instant) -> Result<Outstanding, Reason> {
        if let Some(pos) = self
            .outstanding
            .iter()
            .position(|c| c.nonce.as_slice() == nonce)
        {
            let c = self.outstanding.remove(pos);
            self.remember(c.nonce);
            if now.duration_since(c.issued) >= CHALLENGE_TTL {
                return Err(Reason::new(
                    codes::NONCE_EXPIRED,
                    format!(
                        "the evidence answers a nonce that expired after {}s",
                        CHALLENGE_TTL.as_secs()
                    ),
                ));
            }
            return Ok(c);
        }
        if self.answered.iter().any(|n| n.as_slice() == nonce) {
            return Err(Reason::new(
                codes::NONCE_REUSED,
                "the evidence answers a nonce that was already used",
            ));
        }
        Err(Reason::new(
            codes::NONCE_UNKNOWN,
            "the evidence answers a nonce this server did not issue on this stream",
        ))
    }

    fn remember(&mut self, nonce: [u8; 32]) {
        if self.answered.len() >= REMEMBERED {
            self.answered.pop_front();
        }
        self.answered.push_back(nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_good_once() {
        let mut book = ChallengeBook::default();
        let now = Instant::now();
        let c = book.issue(vec![0, 17], now, &mut rand::thread_rng());
        assert!(book.has_pending(now));
        assert_eq!(
            book.take(&c.nonce, now).expect("first use").pcrs,
            vec![0, 17]
        );
        assert_eq!(
            book.take(&c.nonce, now).expect_err("replay").code,
            codes::NONCE_REUSED
        );
        assert!(!book.has_pending(now));
    }

    #[test]
    fn pending_until_is_the_expiry_of_the_last_challenge() {
        let mut book = ChallengeBook::default();
        let now = Instant::now();
        assert_eq!(book.pending_until(), None);
        let a = book.issue(vec![0], now, &mut rand::thread_rng());
        let later = now + Duration::from_secs(1);
        book.issue(vec![0], later, &mut rand::thread_rng());
        assert_eq!(book.pending_until(), Some(later + CHALLENGE_TTL));
        book.take(&a.nonce, later).expect("answered");
        assert_eq!(book.pending_until(), Some(later + CHALLENGE_TTL));
    }

    #[test]
    fn unknown_and_expired() {
        let mut book = ChallengeBook::default();
        let now = Instant::now();
        assert_eq!(
            book.take(&[7u8; 32], now).expect_err("unknown").code,
            codes::NONCE_UNKNOWN
        );
        let c = book.issue(vec![0], now, &mut rand::thread_rng());
        let later = now + CHALLENGE_TTL;
        assert!(!book.has_pending(later));
        assert_eq!(
            book.take(&c.nonce, later).expect_err("expired").code,
            codes::NONCE_EXPIRED
        );
    }

    #[test]
    fn the_book_is_bounded() {
        let mut book = ChallengeBook::default();
        let now = Instant::now();
        let first = book.issue(vec![0], now, &mut rand::thread_rng());
        for _ in 0..MAX_OUTSTANDING {
            book.issue(vec![0], now, &mut rand::thread_rng());
        }
        assert_eq!(
            book.take(&first.nonce, now).expect_err("evicted").code,
            codes::NONCE_UNKNOWN
        );
        for _ in 0..100 {
            let c = book.issue(vec![0], now, &mut rand::thread_rng());
            book.take(&c.nonce, now).expect("fresh");
        }
        assert!(book.answered.len() <= REMEMBERED);
    }
}
