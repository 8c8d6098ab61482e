"""PowerPaint v2: the checkpoint layout and strict loading rules (``checkpoint``), walking a UNet trunk with taps
(``trunk``), our BrushNet branch (``brushnet``), the task tokens and text encoder (``text_encoder``) and the pipeline
(``pipeline``)."""
