"""Non-learned ops: boxes and anchors (`boxes`), NMS (`nms`), beam search (`beam_search`),
images, thin-plate splines, selective search."""
