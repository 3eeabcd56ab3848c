//! The `npuwhisper` bin's progress messages on a real file: monotonic, within 0..100, ending
//! at 100 at EOS, both as `GST_MESSAGE_PROGRESS` and as `npuwhisper-progress` element messages.

mod common;

use gst::prelude::*;

use common::*;

#[test]
fn progress_on_long_file_is_monotonic_and_ends_at_100() {
    if !common::require(&[common::Need::Models, common::Need::Shared]) {
        return;
    }
    init();
    model_dir("tiny.en");
    let input = eval_file("long_lj001_1-20.wav");
    // One window at a time, so that every window is a step: the files' default batch of 8
    // windows would decode this 144 s file in one go, in about a second.
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! decodebin ! npuwhisper name=asr model=tiny.en batch-size=1 ! \
         appsink name=sink sync=false",
        input.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).expect("pipeline plays");
    // The appsink holds the streaming threads until its samples are pulled: pull them all, then
    // read the messages the bus kept meanwhile.
    let mut texts = 0;
    while sink.pull_sample().is_ok() {
        texts += 1;
    }

    // (type, percent, text) of the progress messages; (percent, position, duration) of the others.
    let mut progress: Vec<(gst::ProgressType, i32, String)> = Vec::new();
    let mut element: Vec<(f64, gst::ClockTime, gst::ClockTime)> = Vec::new();
    let bus = pipeline.bus().unwrap();
    let mut eos = false;
    // The EOS message may reach the bus a moment after the appsink's last pull: wait for it.
    while let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                eos = true;
                break;
            }
            gst::MessageView::Error(e) => panic!("pipeline error: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Progress(p) => {
                let (type_, code, text) = p.get();
                assert_eq!(code, "transcribe");
                let percent = p.structure().unwrap().get::<i32>("percent").unwrap();
                progress.push((type_, percent, text.to_string()));
            }
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "npuwhisper-progress" {
                    assert_eq!(msg.src().unwrap().name(), "asr", "posted by the bin");
                    element.push((
                        s.get::<f64>("percent").unwrap(),
                        s.get::<gst::ClockTime>("position").unwrap(),
                        s.get::<gst::ClockTime>("duration").unwrap(),
                    ));
                }
            }
            _ => (),
        }
    }
    assert!(eos, "no EOS message");
    pipeline.set_state(gst::State::Null).unwrap();
    println!("{texts} text buffers");
    assert!(texts > 0, "no text");
    for p in &progress {
        println!("{p:?}");
    }

    // A 144 s file decoded window by window: several reports along the way.
    assert!(progress.len() >= 3, "only {} progress messages", progress.len());
    assert_eq!(
        progress.len(),
        element.len(),
        "one element message per progress message"
    );
    assert_eq!(progress[0].0, gst::ProgressType::Start);
    for p in &progress[1..progress.len() - 1] {
        assert_eq!(p.0, gst::ProgressType::Continue);
        assert!(p.1 < 100, "100 % before the end: {p:?}");
    }
    let last = progress.last().unwrap();
    assert_eq!((last.0, last.1), (gst::ProgressType::Complete, 100), "{last:?}");
    for w in progress.windows(2) {
        assert!(w[0].1 <= w[1].1, "progress went back: {:?} then {:?}", w[0], w[1]);
    }

    let duration = element[0].2;
    assert!(
        (duration.seconds_f64() - 144.078).abs() < 0.1,
        "duration {duration} is not the file's"
    );
    for (percent, position, d) in &element {
        assert!((0.0..=100.0).contains(percent), "percent {percent}");
        assert_eq!(*d, duration, "the duration changed");
        assert!(*position <= duration, "position {position} past the duration");
        let expected = 100.0 * position.seconds_f64() / duration.seconds_f64();
        assert!(
            (percent - expected).abs() < 1e-6,
            "percent {percent} is not position / duration"
        );
    }
    for w in element.windows(2) {
        assert!(
            w[0].0 <= w[1].0 && w[0].1 <= w[1].1,
            "progress went back: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    assert_eq!(element.last().unwrap().0, 100.0);
    assert_eq!(element.last().unwrap().1, duration);
}
