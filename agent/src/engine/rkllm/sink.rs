//! What the runtime's callbacks turn into: events on each request's channel.
//!
//! The callback runs on the runtime's thread while `rkllm_run` blocks the worker. It copies the
//! token bytes out (they are freed after the callback), joins bytes of a character split across
//! callbacks (`RKLLM_RUN_WAITING` carries the first part), holds back possible stop strings,
//! enforces `max_tokens` where the runtime cannot (ABI 1.2, batch slots), and keeps the `perf`
//! record of the FINISH callback — the only source of timings and counts.

use std::sync::Mutex;

use tokio::sync::mpsc::UnboundedSender;

use super::{
    ffi::common::RKLLMPerfStat,
    rt::{CallState, ResultSink, ResultView, Ret},
};
use crate::engine::{
    Event, FinishReason,
    stop::{StopMatcher, StopOutcome, take_utf8},
};

/// One request's side of a run (one batch slot).
pub struct Slot {
    /// `None` for a padding slot.
    pub tx: Option<UnboundedSender<Event>>,
    stop: StopMatcher,
    utf8: Vec<u8>,
    max_tokens: Option<u32>,
    /// Tokens the runtime produced for this slot (one per callback with text).
    pub tokens: u32,
    /// Everything the model wrote, stop strings included (what the KV cache now holds).
    pub raw: String,
    /// Set when the agent ended the slot (stop string or `max_tokens`).
    pub ended: Option<FinishReason>,
    /// The runtime finished this slot (batch: negative token id).
    pub runtime_done: bool,
    pub perf: Option<RKLLMPerfStat>,
    /// `num_tokens × embd` hidden states and `embd` (embedding runs).
    pub hidden: Option<(Vec<f32>, usize)>,
}

impl Slot {
    pub fn new(tx: UnboundedSender<Event>, stops: &[String], max_tokens: Option<u32>) -> Self {
        Self { tx: Some(tx), stop: StopMatcher::new(stops), max_tokens, ..Self::padding() }
    }

    pub fn padding() -> Self {
        Self {
            tx: None,
            stop: StopMatcher::new(&[]),
            utf8: Vec::new(),
            max_tokens: None,
            tokens: 0,
            raw: String::new(),
            ended: None,
            runtime_done: false,
            perf: None,
            hidden: None,
        }
    }

    fn live(&self) -> bool {
        self.tx.is_some() && self.ended.is_none() && !self.runtime_done
    }

    fn send(&self, text: String, id: i32) {
        if let (Some(tx), false) = (&self.tx, text.is_empty()) {
            let _ = tx.send(Event::Token { text, id });
        }
    }

    fn on_token(&mut self, bytes: &[u8], id: i32) {
        self.tokens += 1;
        if repeats_held_bytes(&self.utf8, bytes) {
            // The runtime re-sent the whole character after WAITING: keep its copy, not both.
            self.utf8.clear();
        }
        self.utf8.extend_from_slice(bytes);
        let text = take_utf8(&mut self.utf8);
        self.raw.push_str(&text);
        match self.stop.push(&text) {
            StopOutcome::Continue(t) => self.send(t, id),
            StopOutcome::Stopped(t) => {
                self.send(t, id);
                self.ended = Some(FinishReason::Stop);
                return;
            }
        }
        if self.max_tokens.is_some_and(|m| self.tokens >= m) {
            self.ended = Some(FinishReason::Length);
            let rest = self.stop.flush();
            self.send(rest, id);
        }
    }

    /// Text still held back when the runtime ended the slot by itself.
    pub fn flush(&mut self) {
        if self.ended.is_none() {
            let mut rest = take_utf8(&mut self.utf8);
            rest.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.utf8)));
            self.raw.push_str(&rest);
            let rest = match self.stop.push(&rest) {
                StopOutcome::Continue(t) => t + &self.stop.flush(),
                StopOutcome::Stopped(t) => {
                    self.ended = Some(FinishReason::Stop);
                    t
                }
            };
            self.send(rest, -1);
        }
    }

    /// Whether the client is gone.
    pub fn closed(&self) -> bool {
        self.tx.as_ref().is_none_or(UnboundedSender::is_closed)
    }
}

/// Whether `next` repeats the incomplete bytes held from a WAITING callback rather than
/// continuing them. The vendor does not document which it does: appended, the held bytes plus a
/// repeat are invalid UTF-8 right at the junction, while `next` alone starts with them and is
/// valid, so the two cases cannot be confused and both runtimes' output comes out intact.
fn repeats_held_bytes(held: &[u8], next: &[u8]) -> bool {
    if held.is_empty() || !next.starts_with(held) {
        return false;
    }
    let joined = [held, next].concat();
    let joined_broken = matches!(std::str::from_utf8(&joined), Err(e) if e.error_len().is_some());
    let next_ok = match std::str::from_utf8(next) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    joined_broken && next_ok
}

/// The sink of one `rkllm_run`.
pub struct RunSink {
    pub slots: Mutex<Vec<Slot>>,
    /// Set by an ERROR callback.
    pub error: Mutex<Option<String>>,
    n_batch: usize,
}

impl RunSink {
    pub fn new(slots: Vec<Slot>) -> Self {
        let n_batch = slots.len();
        Self { slots: Mutex::new(slots), error: Mutex::new(None), n_batch }
    }

    pub fn into_slots(self) -> (Vec<Slot>, Option<String>) {
        let err = self.error.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.slots.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner), err)
    }
}

impl ResultSink for RunSink {
    fn n_batch(&self) -> usize {
        self.n_batch
    }

    fn on(&self, state: CallState, results: &[ResultView<'_>]) -> Ret {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (slot, r) in slots.iter_mut().zip(results) {
            if let Some((h, embd)) = r.hidden {
                slot.hidden = Some((h.to_vec(), embd));
            }
            match state {
                CallState::Normal | CallState::Waiting => {
                    if self.n_batch > 1 && r.token_id < 0 {
                        slot.runtime_done = true;
                    } else if let Some(bytes) = r.text
                        && slot.live()
                    {
                        slot.on_token(bytes, r.token_id);
                    }
                }
                CallState::Finish => slot.perf = Some(r.perf),
                CallState::Error | CallState::Other(_) => {}
            }
        }
        if matches!(state, CallState::Error) {
            *self.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some("the RKLLM runtime reported an error during the run".into());
        }
        // Pause (keep the KV cache, end the run) once no slot wants more tokens.
        let any_live = slots.iter().any(|s| s.live());
        if matches!(state, CallState::Normal | CallState::Waiting) && !any_live { Ret::Pause } else { Ret::Continue }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    fn view(text: &[u8], id: i32) -> ResultView<'_> {
        ResultView { text: Some(text), token_id: id, hidden: None, perf: RKLLMPerfStat::default() }
    }

    #[test]
    fn waiting_bytes_join_and_stop_pauses() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = RunSink::new(vec![Slot::new(tx, &["STOP".into()], None)]);
        let e = "é".as_bytes();
        assert_eq!(sink.on(CallState::Waiting, &[view(&e[..1], 1)]), Ret::Continue);
        assert_eq!(sink.on(CallState::Normal, &[view(&e[1..], 2)]), Ret::Continue);
        assert_eq!(sink.on(CallState::Normal, &[view(b" ST", 3)]), Ret::Continue);
        assert_eq!(sink.on(CallState::Normal, &[view(b"OP more", 4)]), Ret::Pause);
        let mut got = String::new();
        while let Ok(Event::Token { text, .. }) = rx.try_recv() {
            got.push_str(&text);
        }
        assert_eq!(got, "é ");
        let (slots, err) = sink.into_slots();
        assert_eq!((slots[0].ended, slots[0].tokens, err), (Some(FinishReason::Stop), 4, None));
    }

    #[test]
    fn a_character_resent_after_waiting_is_not_doubled() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = RunSink::new(vec![Slot::new(tx, &[], None)]);
        let e = "é".as_bytes();
        sink.on(CallState::Waiting, &[view(&e[..1], 1)]);
        sink.on(CallState::Normal, &[view(e, 2)]);
        sink.on(CallState::Normal, &[view(b"!", 3)]);
        let mut got = String::new();
        while let Ok(Event::Token { text, .. }) = rx.try_recv() {
            got.push_str(&text);
        }
        assert_eq!(got, "é!");
        assert!(!repeats_held_bytes(&e[..1], &e[1..]), "a continuation is joined");
    }

    #[test]
    fn max_tokens_per_slot_in_a_batch() {
        let (t1, _r1) = mpsc::unbounded_channel();
        let (t2, _r2) = mpsc::unbounded_channel();
        let sink = RunSink::new(vec![Slot::new(t1, &[], Some(1)), Slot::new(t2, &[], Some(2)), Slot::padding()]);
        let pad = ResultView { text: None, token_id: -1, hidden: None, perf: RKLLMPerfStat::default() };
        assert_eq!(sink.on(CallState::Normal, &[view(b"a", 1), view(b"b", 1), pad]), Ret::Continue);
        let pad = ResultView { text: None, token_id: -1, hidden: None, perf: RKLLMPerfStat::default() };
        assert_eq!(sink.on(CallState::Normal, &[view(b"c", 1), view(b"d", 1), pad]), Ret::Pause);
        let (slots, _) = sink.into_slots();
        assert_eq!((slots[0].raw.as_str(), slots[1].raw.as_str()), ("a", "bd"));
    }
}
