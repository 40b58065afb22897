"""Dataset builders: everything that writes a dataset in the iHarmony4 layout.

The runtime data path (readers, index, loaders, checker) is the top of `pipeline`; these modules
write data and import from it, never the other way round:

    synth.py, synth_masks.py, synth_sources.py   `python -m giftnet.pipeline.builders.synth`, the demo set
    colour.py                                    foreground colour changes the composites use
    cc_matching.py                               ccHarmony polynomial colour matching (the maths)
    ccharmony.py                                 `python -m giftnet.pipeline.builders.ccharmony`, its builder
    prepare.py                                   `python -m giftnet.pipeline.builders.prepare`, a resized copy
    subset_writer.py                             one subset written atomically (scratch, rename)
    unpack.py                                    released zips read as folders
"""
