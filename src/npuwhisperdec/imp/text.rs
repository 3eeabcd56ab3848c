//! What a decoded window pushes: the language tag, the text buffers of its pieces (or a gap),
//! and the bus messages that go with them.

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::output::{self, Piece, Placed};
use super::super::settings::Settings;
use super::{NpuWhisperDec, Output, State, CAT};
use npuwhisper_core::decoding::WindowResult;

impl NpuWhisperDec {
    /// Pushes what a decoded window gives: a language tag when it changes, its text `pieces`,
    /// or else a GAP up to `gap_until`. The language is posted for complete windows only.
    pub(super) fn push_text(
        &self,
        result: &WindowResult,
        window_pts: gst::ClockTime,
        window_duration: gst::ClockTime,
        pieces: Vec<Piece>,
        gap_until: gst::ClockTime,
        complete: bool,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings().clone();
        let mut outputs = Vec::new();
        let mut messages = Vec::new();
        {
            let mut state = self.state();
            let window_end = window_pts.saturating_add(window_duration);
            outputs.extend(self.language_tag(&mut state, result));
            if complete && settings.post_messages && state.multilingual {
                messages.extend(self.language_message(result, window_pts, window_duration));
            }

            let english = state.language.as_deref().unwrap_or("en") == "en";
            // A window may start inside a sentence; live passes keep their own text.
            let continues = complete && !state.streaming;
            let placed = output::place_pieces(&pieces, state.last_end, state.last_char, window_end, continues, english);
            for p in &placed {
                gst::debug!(CAT, imp = self, "{} - {}: {}", p.start, p.end, p.text);
                outputs.push(Output::Buffer(text_buffer(&mut state, p)));
                if settings.post_messages {
                    messages.push(self.text_message(&settings, &state, p, &pieces[p.piece]));
                }
            }
            if let Some(last) = placed.last() {
                state.last_end = Some(last.end);
                state.last_char = last.text.chars().last();
            } else if let Some((start, end)) = output::gap(state.last_end, window_pts, window_end, gap_until) {
                // No text: tell downstream the time passed.
                outputs.push(Output::Event(
                    gst::event::Gap::builder(start).duration(end - start).build(),
                ));
                state.last_end = Some(end);
            }
        }
        self.push_in_order(messages, outputs)
    }

    /// A tag event when the window's language (or English, for an English-only model)
    /// differs from the last one pushed.
    fn language_tag(&self, state: &mut State, result: &WindowResult) -> Option<Output> {
        let language = result
            .language
            .clone()
            .or_else(|| (!state.multilingual).then(|| "en".to_string()));
        if language.is_none() || language == state.language {
            return None;
        }
        let mut tags = gst::TagList::new();
        if let (Some(tags), Some(lang)) = (tags.get_mut(), language.as_deref()) {
            tags.add::<gst::tags::LanguageCode>(&lang, gst::TagMergeMode::Replace);
        }
        gst::info!(CAT, imp = self, "Language {language:?}");
        state.language = language;
        Some(Output::Event(gst::event::Tag::new(tags)))
    }

    /// The `npuwhisper-language` message of a window whose language was detected.
    fn language_message(
        &self,
        result: &WindowResult,
        window_pts: gst::ClockTime,
        window_duration: gst::ClockTime,
    ) -> Option<gst::Message> {
        let lang = result.language.as_deref()?;
        let s = gst::Structure::builder("npuwhisper-language")
            .field("language", lang)
            .field("start", window_pts)
            .field("duration", window_duration)
            .build();
        Some(gst::message::Element::builder(s).src(&*self.obj()).build())
    }

    /// The `npuwhisper-phrase` (or `-word`) message of a text buffer.
    fn text_message(&self, settings: &Settings, state: &State, placed: &Placed, piece: &Piece) -> gst::Message {
        let name = if settings.word_timestamps {
            "npuwhisper-word"
        } else {
            "npuwhisper-phrase"
        };
        let s = output::text_structure(
            name,
            &placed.text,
            (placed.start, placed.end),
            piece.avg_logprob,
            state.language.as_deref().unwrap_or("en"),
            &piece.words,
        );
        gst::message::Element::builder(s).src(&*self.obj()).build()
    }

    /// Posts `messages`, then pushes `outputs` in order (outside the locks).
    fn push_in_order(
        &self,
        messages: Vec<gst::Message>,
        outputs: Vec<Output>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        for message in messages {
            // Without a bus (a lone element in a test) nobody is listening.
            let _ = self.obj().post_message(message);
        }
        for output in outputs {
            match output {
                Output::Event(event) => {
                    if !self.srcpad.push_event(event) {
                        gst::debug!(CAT, imp = self, "Downstream did not handle an event");
                    }
                }
                Output::Buffer(buffer) => {
                    self.srcpad.push(buffer)?;
                }
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

/// The text buffer of a placed piece; the first after a discontinuity is marked DISCONT.
fn text_buffer(state: &mut State, placed: &Placed) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(placed.text.as_bytes().to_vec());
    if let Some(b) = buffer.get_mut() {
        b.set_pts(placed.start);
        b.set_duration(placed.end - placed.start);
        if std::mem::take(&mut state.discont) {
            b.set_flags(gst::BufferFlags::DISCONT);
        }
    }
    buffer
}
