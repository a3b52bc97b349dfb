"""Evaluate and explain trained models: the paper's Sec. 4 evaluation and Figs. 3-5 as one report folder.

    python -m timm_fct.report RUN [RUN ...] --out DIR

RUN is a training run folder, a checkpoint file, or an 'hf-hub:' / 'local-dir:' model. The report holds
top-1 / top-5, per-class accuracy and the most confused class pairs (metrics.json, metrics.md, which also
record whether a run's EMA or raw weights were evaluated and the checkpoint's epoch), the confusion
matrix (Fig. 3), Grad-CAM maps with the predicted class and confidence (Figs. 4 and 5; for an FCT model,
on the FCT module outputs its classifier reads), the attention each FCT module pays over its input (ours: the
paper's Fig. 4 maps are Grad-CAM), and an index.html showing all of it. Given several models it also
compares them side by side, as Table 1 does, with one sub-folder per model. The report is built in a
hidden sibling folder and renamed into place at the end, so a failure never leaves a partial report behind.
"""
