"""Networks: the Qwen2.5 decoder, the CLIP and DINOv2 towers, the projector, and their assembly."""
