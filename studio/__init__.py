"""The app's services on top of the `gan` library: what the web page does, as plain Python (no Gradio here).

- `studio.models`    a generator ready to serve (`LoadedModel`), the model picker's catalogue
- `studio.session`   one owner of per-session state (model, inverted image, fine-tune result, jobs) with one TTL
- `studio.explore`   the explore state and its URL/JSON codec, rendering with a memo, inversion
- `studio.render_queue` one batched synthesis path for all sessions (pixels independent of the batch)
- `studio.strips`    scrub strips: every value of a slider as one sprite, cached per state
- `studio.media`     frame strips, GIF/MP4, before/after strips, figures
- `studio.finetune`  a fine-tuning run as a stream of UI-ready updates; hands the tuned model back in memory
"""
