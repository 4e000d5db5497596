"""Box and detection operators shared by every family: IoU variants, NMS."""
