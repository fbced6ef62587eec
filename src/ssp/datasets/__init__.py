
# The files that index each AVSBench layout, relative to dataset.root: the manifest reads them and
# check-config names any that is missing before anything runs (ssp.config._dataset_problems).
INDEX_FILES = {
    "avsbench_semantic": ("metadata.csv", "label2idx.json"),
    "avsbench_object_s4": ("Single-source/s4_meta_data.csv",),
    "avsbench_object_ms3": ("Multi-sources/ms3_meta_data.csv",),
}
