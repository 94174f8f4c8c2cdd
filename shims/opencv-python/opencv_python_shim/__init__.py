"""Empty stand-in: cv2 comes from opencv-python-headless."""
