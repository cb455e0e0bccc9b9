"""Images in: decoding (decode: the one place bytes become RGB), the limits it applies (limits), folder rules
(folders: which files are images, class-folder datasets, skipped files), zips of class folders (archive: safe
extraction, folder-or-zip) and the Fashion-MNIST reader (fashion_mnist)."""
