"""Control surfaces: OSC, OSCQuery, MIDI and the scene scheduler."""
