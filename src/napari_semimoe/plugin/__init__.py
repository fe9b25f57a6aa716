"""napari layer: reader, writer, sample data and dock widgets over :mod:`napari_semimoe.core`."""
