"""The monitor: joins predictions with their labels, watches every model version with
river detectors, and turns drift into drift events and (after a cooldown) retrain requests."""
