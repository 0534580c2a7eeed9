"""The real parts that ciel's tests and benches start: a JACK server on the dummy driver, Xvfb,
Pure Data and headless Chromium. Not part of the runtime package: a show never imports this."""
