"""Inpainting generators that paint near-identity distractors into the background of each view.

``nearid.offline.tiny_pipelines`` builds tiny random-weight pipelines of every diffusers family used here, so the
real loading and calling code runs offline in tests and in the demo.
"""
