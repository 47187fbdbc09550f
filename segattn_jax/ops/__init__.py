"""Non-learned ops: boxes and anchors (`boxes`), NMS (`nms`), images, thin-plate splines."""
