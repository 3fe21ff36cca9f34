"""The rater's player bar: switch between a trial's clips at the same position, with loop.

Kept apart from :mod:`recap.ui.rater` because it is the page's own JavaScript: the controller
(:data:`TRANSPORT_JS`), its CSS and the bar's HTML for the screen shown.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recap.ui.rater import RaterView

__all__ = ["TRANSPORT_JS", "TRANSPORT_CSS", "transport_html"]


# The trial's players are separate gr.Audio components, each with its own <audio> element (inside
# WaveSurfer's shadow root). A listening test needs them to act as one player with switches, as in
# webMUSHRA / BeaqleJS: starting one pauses the others and continues from the position the last
# one had (its playing state kept), and "Loop" restarts the playing clip at its end. Gradio has no
# such option, so this controller, installed once per page by the transport's js_on_load, works on
# the <audio> elements themselves. It only calls play(), pause() and sets currentTime, so every
# play, pause and end still goes through Gradio's own player events to the server's play log
# (which the must-play rule is checked against); it sends nothing of its own.
TRANSPORT_JS = """
if (!window.recapTransport) {
  const t = window.recapTransport = {active: null, trial: null, loop: false, hooked: new WeakSet()};
  const bar = () => document.querySelector('#study-transport .recap-transport');
  const ids = () => Array.from(document.querySelectorAll('#study-transport [data-player]'), b => b.dataset.player);
  const media = (id) => {
    // Gradio keeps a spare <audio> (no source) beside WaveSurfer's, which sits in a shadow root.
    const host = document.getElementById(id);
    if (!host) return null;
    const found = Array.from(host.querySelectorAll('audio'));
    for (const el of host.querySelectorAll('*')) if (el.shadowRoot) found.push(...el.shadowRoot.querySelectorAll('audio'));
    return found.find(a => a.currentSrc || a.src) || null;
  };
  // A position to continue from: where the active clip is, or its start once it has ended.
  const position = (a) => (a && !a.ended ? a.currentTime : 0);
  const fit = (a, pos) => (isFinite(a.duration) && pos >= a.duration - 0.05 ? 0 : pos);
  // A new screen (its bar carries a fresh id) starts with no clip selected.
  const fresh = () => {
    const trial = bar() ? bar().dataset.trial : null;
    if (trial !== t.trial) { t.trial = trial; t.active = null; }
  };
  const mark = () => {
    fresh();
    for (const b of document.querySelectorAll('#study-transport [data-player]'))
      b.setAttribute('aria-pressed', String(t.active !== null && media(b.dataset.player) === t.active));
    const box = document.querySelector('#study-transport [data-loop]');
    if (box) box.checked = t.loop;
    const pos = document.querySelector('#study-transport [data-pos]');
    if (pos) pos.textContent = (t.active ? t.active.currentTime : 0).toFixed(1) + ' s';
  };
  const onPlay = (a) => {
    hook();
    const prev = t.active;
    if (prev && prev !== a) {
      const pos = position(prev);
      if (!prev.paused) prev.pause();
      if (Math.abs(a.currentTime - pos) > 0.05) a.currentTime = fit(a, pos);
    }
    for (const id of ids()) {
      const other = media(id);
      if (other && other !== a && !other.paused) other.pause();
    }
    t.active = a;
    mark();
  };
  const onEnded = (a) => {
    // The end is logged by Gradio's own event first; the next round is a new play.
    if (t.loop && a === t.active) setTimeout(() => { a.currentTime = 0; a.play(); }, 0);
  };
  function hook() {
    fresh();
    for (const id of ids()) {
      const a = media(id);
      if (!a || t.hooked.has(a)) continue;
      t.hooked.add(a);
      a.addEventListener('play', () => onPlay(a));
      a.addEventListener('ended', () => onEnded(a));
      a.addEventListener('timeupdate', () => { if (a === t.active) mark(); });
    }
  }
  const select = (id) => {
    hook();
    const next = media(id), cur = t.active;
    if (!next || next === cur) return;
    const playing = cur !== null && !cur.paused && !cur.ended;
    if (cur) {
      const pos = position(cur);
      if (playing) cur.pause();
      next.currentTime = fit(next, pos);
    }
    t.active = next;
    mark();
    if (playing) next.play();
  };
  const toggle = () => {
    hook();
    const a = t.active || media(ids()[0]);
    if (!a) return;
    if (a.paused || a.ended) { t.active = a; a.play(); } else a.pause();
  };
  // Players appear and change as trials are shown: hook them just before any press reaches them.
  document.addEventListener('pointerdown', hook, true);
  document.addEventListener('keydown', hook, true);
  document.addEventListener('click', (e) => {
    const target = e.target instanceof Element ? e.target : null;
    const sw = target && target.closest('#study-transport [data-player]');
    const pp = target && target.closest('#study-transport [data-playpause]');
    if (sw) select(sw.dataset.player);
    else if (pp) toggle();
  });
  document.addEventListener('change', (e) => {
    if (e.target instanceof Element && e.target.matches('#study-transport [data-loop]')) t.loop = e.target.checked;
  });
}
"""

TRANSPORT_CSS = """
.recap-transport { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin: 4px 0; }
button { min-width: 44px; min-height: 40px; padding: 4px 10px; border: 1px solid var(--border-color-primary);
         border-radius: 6px; background: var(--background-fill-secondary); color: var(--body-text-color); }
button[aria-pressed="true"] { background: var(--color-accent); color: white; font-weight: bold; }
label { display: inline-flex; align-items: center; gap: 4px; min-height: 40px; }
"""


def transport_html(view: RaterView) -> str:
    """The switch bar of what the view shows: one button per player (by its shown name only), play/pause, loop."""
    if view.stage == "volume":
        players = [("Noise", "study-calibration")]
    elif view.kind == "mushra":
        players = [("Reference", "study-reference")] + [(str(k + 1), f"study-stimulus-{k + 1}")
                                                        for k in range(len(view.clips))]
    elif view.kind is not None:
        players = ([("Reference", "study-reference")] if view.reference else []) + [
            (label if view.kind in ("ab", "abx") else "Clip", elem) for label, elem in
            zip(view.labels, ("study-clip-a", "study-clip-b", "study-clip-x"))]
    else:
        return ""
    # Labels are "A", "B", "X", "1".., "Reference", "Noise", "Clip" (made here, not by a rater).
    switches = "".join(f'<button type="button" data-player="{elem}" aria-pressed="false">{label}</button>'
                       for label, elem in players)
    # A fresh id per screen tells the controller a new trial is on (the position starts over).
    return (f'<div class="recap-transport" role="group" aria-label="Player" data-trial="{secrets.token_hex(6)}">'
            '<button type="button" data-playpause>Play / pause</button>'
            f'<span>Switch to:</span>{switches}'
            '<label><input type="checkbox" data-loop> Loop</label><span data-pos>0.0 s</span></div>'
            '<div>Switching keeps the position and goes on playing if a clip was playing.</div>')
