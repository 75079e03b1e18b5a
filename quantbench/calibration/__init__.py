"""Calibration: streaming |x| histograms (collect), methods as pure functions histogram -> amax
(methods, registry), and the stage that turns a dataset into range tables (calibrate)."""
