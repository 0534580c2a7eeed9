"""The phone archive that `make models` trains the default models on, made from Debian packages.

Nothing is downloaded: the voices come from espeak-ng, the photos from wallpapers that Debian
packages install, and everything else is synthesised here.

- voice notes (5-60 s; WAV, AAC in .m4a, AMR-NB in .amr): someone talking to the phone, two people
  talking, a kitchen (clinks of glasses and plates, a running tap, a kettle coming to the boil), a
  street (traffic with cars passing by, footsteps, distant horns, wind), a phone ringing a little
  tune before someone answers. The speech is espeak-ng in ten languages, many voices, pitches and
  speeds, saying short everyday sentences; the places are rooms with generated reverberation.
  Each note then goes through a phone: handling noise, microphone hiss, band-limiting and an
  automatic gain control that pumps a little and clips the loud bits;
- photos (.jpg, 640x480 or 480x640): crops of photographic wallpapers (meadows, flowers, leaves,
  lakes, mountains, a jetty, a living room, cups, a forest path), zoomed, flipped, a little tilted,
  with white balance and exposure shifts (some dark, night-like), then made to look like a 2012
  phone camera: soft optics, vignetting, sensor noise, over-sharpening, sometimes over-saturated,
  JPEG at phone qualities, a quarter stored sideways with an EXIF orientation.

`make_archive(folder, audio_minutes, photos, seed)` is deterministic for a seed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..errors import MissingPackages
from .defaults import SR, babble, sky_photo, write_photo, write_sound

APT_HINT = "sudo apt-get install --no-install-recommends {pkgs}   (or: make setup)"

# --- speech -----------------------------------------------------------------------------------

# language -> (espeak-ng voices, short everyday sentences)
LANGUAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (("en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029"), (
        "Okay, I'm recording now.", "Can you hear me?", "Remind me to buy milk and bread tomorrow.",
        "We're almost there, just around the corner.", "The train is late again.",
        "I'll call you back in five minutes.", "Did you leave the keys on the table?",
        "It's raining, bring an umbrella.", "Happy birthday! We miss you.", "Listen to this.",
        "No, the other one, the blue one.", "What time does the film start?",
        "I think it's this way.", "Honestly, I don't remember.", "Put the kettle on, would you?",
        "Look at the sky tonight, it's amazing.", "Wait, wait, say that again.",
        "Meeting moved to Thursday at ten.", "Thanks, see you soon.", "That was the best soup ever.")),
    "fr": (("fr-fr", "fr-be", "fr-ch"), (
        "Bon, j'enregistre.", "Tu m'entends ?", "N'oublie pas le pain en rentrant.",
        "On arrive dans dix minutes.", "Il pleut encore, c'est pas croyable.",
        "Je te rappelle tout à l'heure.", "Attends, je cherche mes clés.", "Bon anniversaire, maman !",
        "C'est par là, je crois.", "Le train a du retard.", "Écoute ça.",
        "On mange à quelle heure ?", "Non, l'autre, le rouge.", "Merci, à demain !",
        "Regarde la lune, elle est énorme.")),
    "de": (("de",), (
        "So, ich nehme jetzt auf.", "Hörst du mich?", "Vergiss nicht, Milch zu kaufen.",
        "Wir sind gleich da.", "Der Zug hat schon wieder Verspätung.", "Ich rufe dich später an.",
        "Wo sind denn die Schlüssel?", "Es regnet, nimm einen Schirm mit.",
        "Alles Gute zum Geburtstag!", "Hör mal, das ist schön.", "Nein, das andere.",
        "Wann fängt der Film an?", "Danke, bis bald.")),
    "es": (("es", "es-419"), (
        "Vale, ya estoy grabando.", "¿Me oyes?", "Acuérdate de comprar pan.",
        "Llegamos en cinco minutos.", "Otra vez llueve.", "Te llamo luego, ¿vale?",
        "¿Dónde dejaste las llaves?", "¡Feliz cumpleaños!", "Escucha esto.",
        "No, el otro, el azul.", "¿A qué hora empieza?", "Gracias, hasta mañana.",
        "Mira qué cielo tan bonito.")),
    "it": (("it",), (
        "Allora, sto registrando.", "Mi senti?", "Ricordati di comprare il latte.",
        "Arriviamo tra poco.", "Piove ancora.", "Ti richiamo dopo.", "Dove sono le chiavi?",
        "Tanti auguri!", "Senti questa.", "No, l'altro.", "A che ora si mangia?", "Grazie, ciao ciao.")),
    "pt": (("pt", "pt-br"), (
        "Pronto, estou gravando.", "Você me ouve?", "Não esquece do pão.", "Já estamos chegando.",
        "Está chovendo de novo.", "Te ligo mais tarde.", "Cadê as chaves?", "Parabéns pra você!",
        "Escuta isso.", "Não, o outro.", "Obrigado, até amanhã.")),
    "nl": (("nl",), (
        "Oké, ik neem nu op.", "Hoor je me?", "Vergeet de melk niet.", "We zijn er bijna.",
        "Het regent alweer.", "Ik bel je straks terug.", "Waar zijn de sleutels?",
        "Gefeliciteerd!", "Luister eens.", "Dank je, tot morgen.")),
    "sv": (("sv",), (
        "Okej, jag spelar in nu.", "Hör du mig?", "Glöm inte mjölken.", "Vi är snart framme.",
        "Det regnar igen.", "Jag ringer dig sen.", "Var är nycklarna?", "Grattis på födelsedagen!",
        "Tack, vi ses.")),
    "pl": (("pl",), (
        "Dobra, nagrywam.", "Słyszysz mnie?", "Kup chleb, proszę.", "Zaraz będziemy.",
        "Znowu pada.", "Oddzwonię później.", "Gdzie są klucze?", "Wszystkiego najlepszego!",
        "Dzięki, do jutra.")),
    "ja": (("ja",), (
        "もしもし、きこえる？", "いま、ろくおんしてるよ。", "あした、ぎゅうにゅう かってきて。",
        "もうすぐ つくよ。", "また あめだね。", "あとで でんわするね。", "かぎ どこ？",
        "おたんじょうび おめでとう！", "ありがとう、またね。")),
}
LANGUAGE_WEIGHTS = {"en": 0.3, "fr": 0.12, "de": 0.1, "es": 0.1, "it": 0.08, "pt": 0.08,
                    "nl": 0.06, "sv": 0.05, "pl": 0.05, "ja": 0.06}
MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "max", "paul", "david", "Mike", "grandpa", "Andy")
FEMALE = ("f1", "f2", "f3", "f4", "f5", "Andrea", "Annie", "aunty", "belinda", "linda", "steph", "grandma")
# what someone says when they pick up
HELLO = {"en": "Hello?", "fr": "Allô ?", "de": "Hallo?", "es": "¿Sí? ¿Diga?", "it": "Pronto?",
         "pt": "Alô?", "nl": "Hallo?", "sv": "Hallå?", "pl": "Halo?", "ja": "もしもし？"}

ESPEAK_RATE = 22050


@dataclass(frozen=True)
class Speaker:
    lang: str
    voice: str      # espeak-ng voice, e.g. "fr-be"
    variant: str    # espeak-ng variant, e.g. "f3"
    pitch: int      # espeak-ng -p, 0-99
    speed: int      # espeak-ng -s, words per minute
    shift: float    # resampling factor: >1 higher and faster (a smaller vocal tract)


def _speaker(rng: np.random.Generator, lang: str | None = None) -> Speaker:
    if lang is None:
        langs = list(LANGUAGE_WEIGHTS)
        weights = np.array(list(LANGUAGE_WEIGHTS.values()))
        lang = langs[rng.choice(len(langs), p=weights / weights.sum())]
    voices = LANGUAGES[lang][0]
    female = rng.random() < 0.5
    variant = str(rng.choice(FEMALE if female else MALE))
    return Speaker(lang, str(voices[rng.integers(len(voices))]), variant,
                   int(rng.integers(25, 75)), int(rng.integers(135, 200)),
                   float(rng.uniform(0.94, 1.1) if female else rng.uniform(0.88, 1.04)))


def _sentence(rng: np.random.Generator, lang: str) -> str:
    sentences = LANGUAGES[lang][1]
    return str(sentences[rng.integers(len(sentences))])


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, who: Speaker, sr: int = SR) -> np.ndarray:
    """`text` said by `who` (espeak-ng), float32 mono at `sr`, leading and trailing silence trimmed."""
    import soxr

    cmd = ["espeak-ng", "-v", f"{who.voice}+{who.variant}", "-p", str(who.pitch), "-s", str(who.speed),
           "-g", "2", "--stdout", text]
    raw = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    pcm = np.frombuffer(raw[44:len(raw) - (len(raw) - 44) % 2], dtype="<i2").astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(pcm) > 0.01)
    if loud.size == 0:
        return np.zeros(int(0.2 * sr), np.float32)
    pcm = pcm[max(0, loud[0] - 200): loud[-1] + 400]
    return soxr.resample(pcm, ESPEAK_RATE * who.shift, sr).astype(np.float32)


# --- signal helpers ---------------------------------------------------------------------------

def _fftconvolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.size + b.size - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]


def _filter(x: np.ndarray, lo: float = 0.0, hi: float = 0.0, sr: int = SR, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth-like band filter by FFT: high-pass above `lo`, low-pass below `hi` (0: off)."""
    spec = np.fft.rfft(x)
    f = np.maximum(np.fft.rfftfreq(x.size, 1 / sr), 1e-3)
    gain = np.ones_like(f)
    if lo > 0:
        gain /= np.sqrt(1.0 + (lo / f) ** (2 * order))
    if hi > 0:
        gain /= np.sqrt(1.0 + (f / hi) ** (2 * order))
    return np.fft.irfft(spec * gain, x.size)


def _env(n: int, rate: float, rng: np.random.Generator, depth: float = 1.0) -> np.ndarray:
    """A slow random envelope in [1-depth, 1], about `rate` changes per second."""
    points = max(2, int(n / SR * rate) + 2)
    v = 1.0 - depth * rng.random(points)
    return np.interp(np.linspace(0, points - 1, n), np.arange(points), v)


def _place(buf: np.ndarray, sound: np.ndarray, at: int, gain: float = 1.0) -> None:
    """Add `sound` into `buf` from sample `at`, clipped to the buffer."""
    if at >= buf.size or at + sound.size <= 0:
        return
    s0 = max(0, -at)
    end = min(buf.size, at + sound.size)
    buf[max(0, at):end] += gain * sound[s0:s0 + end - max(0, at)]


def _norm(x: np.ndarray, rms: float = 0.1) -> np.ndarray:
    return x * (rms / (np.sqrt(np.mean(x ** 2)) + 1e-9))


def room_ir(rng: np.random.Generator, rt60: float, sr: int = SR) -> np.ndarray:
    """A room impulse response: direct sound, a few early reflections and a tail that decays by
    60 dB in `rt60` seconds, losing its highs faster than its lows."""
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    white = rng.standard_normal(n)
    dull = _filter(white, hi=rng.uniform(1200, 2500), sr=sr)
    dull *= np.std(white) / (np.std(dull) + 1e-9)
    bright_share = np.exp(-t / (rt60 * 0.25))
    tail = (bright_share * white + (1 - bright_share) * dull) * np.exp(-6.9 * t / rt60)
    onset = int(rng.uniform(0.004, 0.012) * sr)
    tail[:onset] = 0.0
    tail[onset:onset + 64] *= np.linspace(0, 1, min(64, n - onset))
    ir = 0.5 * tail / np.sqrt(np.sum(tail ** 2) + 1e-9)
    ir[0] = 1.0
    for _ in range(int(rng.integers(4, 10))):                     # walls, table, ceiling
        d = int(rng.uniform(0.002, 0.03) * sr)
        if d < n:
            ir[d] += rng.uniform(-0.5, 0.5)
    return ir


def _reverb(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    return _fftconvolve(x, ir)[:x.size]


# --- sound sources ----------------------------------------------------------------------------

def _speech_track(n: int, rng: np.random.Generator, speakers: list[Speaker], start: float = 0.3,
                  fill: float = 1.0, turn: tuple[int, int] = (1, 3)) -> list[np.ndarray]:
    """One track per speaker: they take turns (1-3 sentences each), with pauses and a little overlap."""
    tracks = [np.zeros(n) for _ in speakers]
    pos = int(start * SR)
    who = 0
    while pos < n * fill - SR:
        s = speakers[who]
        for _ in range(int(rng.integers(turn[0], turn[1] + 1))):
            voice = speak(_sentence(rng, s.lang), s)
            voice *= rng.uniform(0.6, 1.0) / (np.max(np.abs(voice)) + 1e-9)
            _place(tracks[who], voice, pos)
            pos += voice.size + int(rng.uniform(0.15, 0.7) * SR)
            if pos >= n * fill - SR:
                break
        pos += int(rng.uniform(0.2, 1.6) * SR)
        if len(speakers) > 1:
            who = (who + 1) % len(speakers)
            pos -= int(rng.uniform(0.0, 0.9) * SR)                # talk over each other a little
    return tracks


def _clinks(n: int, rng: np.random.Generator, count: int) -> np.ndarray:
    """Glasses, plates and cutlery: short inharmonic partials with a sharp attack, in little clusters."""
    out = np.zeros(n)
    ratios = {"glass": (1.0, 2.32, 4.25, 6.63), "plate": (1.0, 1.59, 2.14, 2.3, 2.65), "spoon": (1.0, 2.76, 5.4, 8.93)}
    for _ in range(count):
        kind = list(ratios)[rng.integers(3)]
        f0 = {"glass": rng.uniform(1100, 2600), "plate": rng.uniform(500, 1300), "spoon": rng.uniform(900, 1800)}[kind]
        decay = {"glass": rng.uniform(0.25, 0.9), "plate": rng.uniform(0.08, 0.3), "spoon": rng.uniform(0.1, 0.4)}[kind]
        length = int(min(decay * 2.5, 2.0) * SR)
        t = np.arange(length) / SR
        hit = np.zeros(length)
        for k, r in enumerate(ratios[kind]):
            f = f0 * r * rng.uniform(0.99, 1.01)
            if f > SR / 2 - 200:
                continue
            partial = np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) * np.exp(-t * (1 + 0.7 * k) / decay)
            hit += rng.uniform(0.3, 1.0) / (k + 1) * partial
        hit[:40] += rng.standard_normal(40) * np.linspace(1, 0, 40) * 0.5   # the knock itself
        at = int(rng.uniform(0, n / SR) * SR)
        for _ in range(int(rng.integers(1, 4))):                  # a clink, then one or two more
            _place(out, hit, at, rng.uniform(0.2, 1.0))
            at += int(rng.uniform(0.08, 0.6) * SR)
    return out


def _water(n: int, rng: np.random.Generator, start: int, length: int) -> np.ndarray:
    """A running tap: fluttering band-passed noise and small rising bubbles, faded in and out."""
    out = np.zeros(n)
    length = min(length, n - start)
    if length <= SR // 4:
        return out
    flow = _filter(rng.standard_normal(length), lo=rng.uniform(300, 700), hi=rng.uniform(3000, 6000))
    flutter = 0.6 + 0.4 * _filter(rng.standard_normal(length), hi=25.0)
    flow = _norm(flow * flutter, 1.0)
    for _ in range(int(length / SR * rng.uniform(20, 60))):
        d = int(rng.uniform(0.01, 0.04) * SR)
        t = np.arange(d) / SR
        f = rng.uniform(500, 2500) * (1 + 3 * t / t[-1] * rng.uniform(0.1, 0.5))
        bubble = np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / (d / SR / 3))
        _place(flow, 2.0 * bubble, int(rng.integers(0, length - d)), rng.uniform(0.3, 1.0))
    fade = int(min(0.3 * SR, length // 3))
    ramp = np.ones(length)
    ramp[:fade] = np.linspace(0, 1, fade)
    ramp[-fade:] = np.linspace(1, 0, fade)
    out[start:start + length] = flow * ramp
    return out


def _kettle(n: int, rng: np.random.Generator) -> np.ndarray:
    """A kettle coming to the boil: a rumble and bubbling that grow, then a whistle or a click."""
    out = np.zeros(n)
    start = int(rng.uniform(0, 0.4) * n)
    length = n - start
    t = np.arange(length) / SR
    grow = (t / max(t[-1], 1e-3)) ** 1.5
    rumble = _norm(_filter(rng.standard_normal(length), lo=60, hi=rng.uniform(350, 700)), 1.0)
    seethe = _norm(_filter(rng.standard_normal(length), lo=1500, hi=5000), 1.0)
    bubbling = 0.5 + 0.5 * np.clip(_filter(rng.standard_normal(length), hi=12.0) * 8, -1, 1)
    sound = (0.5 + grow) * rumble * (0.7 + 0.3 * bubbling) * 0.4 + grow ** 2 * seethe * 0.3
    if rng.random() < 0.5:                                        # a stove kettle whistles
        w0 = int(rng.uniform(0.6, 0.85) * length)
        tw = t[w0:] - t[w0]
        warble = 1 + 0.006 * np.sin(2 * np.pi * rng.uniform(4, 7) * tw)
        f = rng.uniform(1700, 2600) * (1 + 0.04 * np.tanh(tw)) * warble
        amp = np.clip(tw / rng.uniform(0.5, 2.0), 0, 1) * (0.8 + 0.2 * _env(tw.size, 6, rng))
        sound[w0:] += amp * np.sin(2 * np.pi * np.cumsum(f) / SR) * rng.uniform(0.5, 1.2)
    else:                                                         # an electric one clicks off
        c = int(rng.uniform(0.7, 0.95) * length)
        sound[c:] *= np.exp(-(t[c:] - t[c]) / 0.8)
        click = rng.standard_normal(200) * np.exp(-np.arange(200) / 30)
        _place(sound, click * 3, c)
    out[start:] = sound
    return out


def _car(n: int, rng: np.random.Generator, at: float) -> np.ndarray:
    """A car passing at time `at`: engine harmonics gliding down as it passes (Doppler), tyre noise,
    louder and brighter when close."""
    out = np.zeros(n)
    width = rng.uniform(0.8, 2.5)
    lo, hi = int(max(0, (at - 5 * width) * SR)), int(min(n, (at + 5 * width) * SR))
    if hi - lo < SR // 4:
        return out
    t = np.arange(lo, hi) / SR - at
    near = 1.0 / (1.0 + (t / width) ** 2)
    doppler = 1.0 - rng.uniform(0.03, 0.08) * t / np.sqrt(t ** 2 + width ** 2)
    f0 = rng.uniform(25, 60) * doppler * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    engine = sum((np.sin(k * phase + rng.uniform(0, 6.3)) / k for k in range(1, 14) if 14 * f0.max() < SR / 2),
                 np.zeros(t.size))
    engine = _filter(engine, hi=rng.uniform(400, 900))
    tyres = _filter(rng.standard_normal(t.size), lo=200, hi=2500)
    car = _norm(engine, 1.0) * near * 0.6 + _norm(tyres, 1.0) * near ** 2 * rng.uniform(0.4, 1.0)
    out[lo:hi] = car * rng.uniform(0.3, 1.0)
    return out


def _footsteps(n: int, rng: np.random.Generator) -> np.ndarray:
    """Steps at walking pace on pavement: heel and scuff, uneven, now and then a pause."""
    impulses = np.zeros(n)
    rate = rng.uniform(1.6, 2.2)
    pos = rng.uniform(0, 1.0)
    while pos * SR < n:
        impulses[int(pos * SR)] = rng.uniform(0.5, 1.0)
        pos += 1.0 / rate * rng.uniform(0.9, 1.1) + (rng.uniform(1, 4) if rng.random() < 0.04 else 0.0)
    k = int(0.09 * SR)
    tk = np.arange(k) / SR
    kernel = rng.standard_normal(k) * (np.exp(-tk / 0.008) + 0.3 * np.exp(-np.abs(tk - 0.035) / 0.01))
    kernel = _filter(kernel, lo=150, hi=rng.uniform(1000, 2500))
    return _fftconvolve(impulses, kernel)[:n]


def _horns(n: int, rng: np.random.Generator) -> np.ndarray:
    """A distant horn or two: two square-ish tones a third apart, short beeps."""
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 3))):
        f = rng.uniform(330, 480)
        at = int(rng.uniform(0, n / SR - 1.2) * SR)
        for _ in range(int(rng.integers(1, 3))):
            d = int(rng.uniform(0.15, 0.9) * SR)
            t = np.arange(d) / SR
            tone = sum(np.sin(2 * np.pi * f * r * k * t) / k ** 2 for r in (1.0, 1.26) for k in (1, 3, 5, 7))
            tone *= np.minimum(1, np.minimum(t / 0.02, (t[-1] - t) / 0.03))
            _place(out, tone, at, rng.uniform(0.1, 0.4))
            at += d + int(rng.uniform(0.08, 0.3) * SR)
    return out


def _birds(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(int(n / SR * rng.uniform(0.1, 0.6))):
        at = int(rng.integers(0, n))
        f0 = rng.uniform(2500, 5000)
        for _ in range(int(rng.integers(2, 7))):
            d = int(rng.uniform(0.04, 0.15) * SR)
            t = np.arange(d) / SR
            f = f0 * (1 + rng.uniform(-0.3, 0.3) * t / t[-1])
            chirp = np.sin(2 * np.pi * np.cumsum(f) / SR) * np.sin(np.pi * t / t[-1]) ** 2
            _place(out, chirp, at, rng.uniform(0.05, 0.2))
            at += d + int(rng.uniform(0.03, 0.15) * SR)
    return out


def _wind(n: int, rng: np.random.Generator) -> np.ndarray:
    """Wind on the microphone: low, gusty rumble."""
    gusts = np.clip(_filter(rng.standard_normal(n), hi=1.0) * rng.uniform(15, 40), 0, None)
    return _norm(_filter(rng.standard_normal(n), lo=20, hi=rng.uniform(150, 400)), 1.0) * gusts


def _ringtone(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A phone's ring: a little tune of sine or square tones, repeated, or an old-style trill."""
    n = int(seconds * SR)
    out = np.zeros(n)
    if rng.random() < 0.25:                                       # trill: two tones warbling at ~20 Hz
        f1, f2 = rng.uniform(700, 1100), rng.uniform(1100, 1500)
        pos = 0
        while pos < n:
            d = int(0.4 * SR)
            t = np.arange(d) / SR
            f = np.where(np.sin(2 * np.pi * 20 * t) > 0, f1, f2)
            burst = np.sign(np.sin(2 * np.pi * np.cumsum(f) / SR)) * 0.5
            _place(out, burst, pos)
            _place(out, burst, pos + int(0.6 * SR))
            pos += int(rng.uniform(2.0, 3.0) * SR)
        return _filter(out, hi=4000)
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])                 # major pentatonic, two octaves
    root = rng.uniform(440, 880)
    beat = rng.uniform(0.09, 0.2)
    notes = [(int(scale[rng.integers(len(scale))]) if rng.random() > 0.15 else None, int(rng.choice([1, 1, 2, 3])))
             for _ in range(int(rng.integers(5, 11)))]
    square = rng.random() < 0.5
    harmonics = (1, 3, 5, 7, 9) if square else (1, 2)
    pos = 0
    while pos < n:
        for deg, length in notes:
            d = int(beat * length * SR)
            if deg is not None:
                t = np.arange(d) / SR
                pitch = root * 2 ** (deg / 12)
                tone = sum((np.sin(2 * np.pi * pitch * h * t) / h for h in harmonics if pitch * h < SR / 2 - 500), np.zeros(d))
                tone *= np.minimum(1, t / 0.005)
                if not square:                                    # chimes fade, beeps hold
                    tone *= np.exp(-t / rng.uniform(0.15, 0.6))
                tone[-80:] *= np.linspace(1, 0, min(80, d))
                _place(out, tone, pos, 0.4)
            pos += d
        pos += int(rng.uniform(0.4, 1.2) * SR)
    return out


# --- scenes -----------------------------------------------------------------------------------

def _room_tone(n: int, rng: np.random.Generator) -> np.ndarray:
    """Quiet room noise: pinkish air, sometimes a fridge or mains hum."""
    air = _norm(_filter(rng.standard_normal(n), lo=40, hi=rng.uniform(800, 2500), order=1), 1.0)
    t = np.arange(n) / SR
    hum = np.zeros(n)
    if rng.random() < 0.5:
        mains = rng.choice([50.0, 60.0])
        hum = sum(np.sin(2 * np.pi * mains * k * t) / k for k in (1, 2, 3)) * 0.5
    return air + hum * rng.uniform(0.0, 1.0)


def _scene_memo(n: int, rng: np.random.Generator) -> np.ndarray:
    """Someone talking to the phone in a room."""
    who = _speaker(rng)
    voice = _speech_track(n, rng, [who], start=rng.uniform(0.2, 1.0), fill=rng.uniform(0.75, 1.0), turn=(2, 5))[0]
    room = room_ir(rng, rng.uniform(0.2, 0.7))
    wet = _reverb(voice, room)
    return _norm(voice + rng.uniform(0.1, 0.35) * wet, 0.1) + _room_tone(n, rng) * rng.uniform(0.002, 0.01)


def _scene_conversation(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two people talking, taking turns, one near the phone and one across the table."""
    a = _speaker(rng)
    b = _speaker(rng, a.lang if rng.random() < 0.85 else None)
    near, far = _speech_track(n, rng, [a, b], start=rng.uniform(0.1, 0.8))
    room = room_ir(rng, rng.uniform(0.3, 0.9))
    far = _filter(far, hi=rng.uniform(2500, 5000)) * rng.uniform(0.3, 0.7)
    mix = near + rng.uniform(0.1, 0.3) * _reverb(near, room) + far + rng.uniform(0.4, 0.9) * _reverb(far, room)
    return _norm(mix, 0.1) + _room_tone(n, rng) * rng.uniform(0.003, 0.015)


def _scene_kitchen(n: int, rng: np.random.Generator) -> np.ndarray:
    """A kitchen: clinks, the tap, often a kettle, people talking while they cook."""
    sec = n / SR
    room = room_ir(rng, rng.uniform(0.3, 0.8))
    things = _clinks(n, rng, int(sec * rng.uniform(0.2, 0.8)) + 1) * 0.08
    for _ in range(int(rng.integers(0, 3))):
        things += _water(n, rng, int(rng.uniform(0, 0.8) * n), int(rng.uniform(1.5, 8) * SR)) * rng.uniform(0.03, 0.08)
    if rng.random() < 0.6:
        things += _kettle(n, rng) * rng.uniform(0.03, 0.08)
    mix = things + rng.uniform(0.3, 0.6) * _reverb(things, room)
    if rng.random() < 0.75:
        speakers = [_speaker(rng)]
        if rng.random() < 0.5:
            speakers.append(_speaker(rng, speakers[0].lang))
        tracks = _speech_track(n, rng, speakers, start=rng.uniform(0.5, 3.0), fill=rng.uniform(0.5, 1.0))
        voices = sum((tr * rng.uniform(0.3, 0.9) for tr in tracks), np.zeros(n))
        mix = mix + _norm(voices + 0.4 * _reverb(voices, room), 0.05)
    return mix + _room_tone(n, rng) * rng.uniform(0.003, 0.01)


def _scene_street(n: int, rng: np.random.Generator) -> np.ndarray:
    """A street: traffic rumble, cars passing, footsteps, distant horns, wind, sometimes birds, and
    usually the phone's owner saying something."""
    sec = n / SR
    brown = np.cumsum(rng.standard_normal(n))
    traffic = _norm(_filter(brown, lo=30, hi=rng.uniform(300, 700)), 1.0) * (0.6 + 0.4 * _env(n, 0.3, rng))
    busy = rng.uniform(0.1, 0.4)
    for _ in range(int(sec * busy) + 1):
        traffic += _car(n, rng, rng.uniform(0, sec))
    mix = _norm(traffic, 0.04)
    if rng.random() < 0.7:
        mix += _norm(_footsteps(n, rng), rng.uniform(0.004, 0.01))
    if rng.random() < 0.4:
        far = _horns(n, rng)
        mix += _filter(far + 0.8 * _reverb(far, room_ir(rng, rng.uniform(1.0, 2.0))), hi=2000) * 0.02
    if rng.random() < 0.3:
        mix += _birds(n, rng) * 0.3
    if rng.random() < 0.5:
        mix += _wind(n, rng) * rng.uniform(0.005, 0.03)
    if rng.random() < 0.8:
        speakers = [_speaker(rng)]
        if rng.random() < 0.4:
            speakers.append(_speaker(rng, speakers[0].lang))
        tracks = _speech_track(n, rng, speakers, start=rng.uniform(0.5, 2.0), fill=rng.uniform(0.4, 1.0))
        mix += _norm(sum((tr * g for tr, g in zip(tracks, (1.0, 0.5))), np.zeros(n)), 0.08)
    return mix


def _scene_ringtone(n: int, rng: np.random.Generator) -> np.ndarray:
    """A phone ringing on the table, then someone picks up and talks."""
    ring_len = rng.uniform(3, min(12, n / SR * 0.6))
    ring = _ringtone(ring_len, rng)
    room = room_ir(rng, rng.uniform(0.3, 0.8))
    speaker_band = _filter(ring, lo=rng.uniform(500, 900), hi=rng.uniform(3500, 6000))   # a tiny loudspeaker
    speaker_band = np.tanh(3 * speaker_band / (np.max(np.abs(speaker_band)) + 1e-9))
    mix = np.zeros(n)
    _place(mix, speaker_band + 0.5 * _reverb(speaker_band, room), int(rng.uniform(0.1, 1.0) * SR), 0.15)
    who = _speaker(rng)
    hello = speak(HELLO[who.lang], who)
    at = int((ring_len + rng.uniform(0.5, 1.5)) * SR)
    _place(mix, hello * 0.25 / (np.max(np.abs(hello)) + 1e-9), at)
    rest = n - at - hello.size - SR // 2
    if rest > 2 * SR:
        voice = _speech_track(rest, rng, [who], start=0.5, fill=rng.uniform(0.6, 1.0))[0]
        voice = voice + 0.2 * _reverb(voice, room)
        _place(mix, voice * 0.25, n - rest)
    return mix + _room_tone(n, rng) * rng.uniform(0.003, 0.01)


SCENES = {"memo": (_scene_memo, 0.3), "conversation": (_scene_conversation, 0.25), "kitchen": (_scene_kitchen, 0.15),
          "street": (_scene_street, 0.2), "ringtone": (_scene_ringtone, 0.1)}


def _handling(n: int, rng: np.random.Generator) -> np.ndarray:
    """The phone in a hand or a pocket: low thumps and rubbing."""
    out = np.zeros(n)
    for _ in range(int(rng.integers(0, 4))):
        d = int(rng.uniform(0.05, 0.3) * SR)
        thump = _filter(rng.standard_normal(d), hi=rng.uniform(80, 250)) * np.exp(-np.arange(d) / (d / 4))
        _place(out, _norm(thump, 1.0), int(rng.integers(0, n)), rng.uniform(0.05, 0.4))
    if rng.random() < 0.4:
        d = int(min(n, rng.uniform(0.5, 3.0) * SR))
        rub = _filter(rng.standard_normal(d), lo=100, hi=1200) * np.sin(np.linspace(0, np.pi, d)) ** 2
        _place(out, _norm(rub, 0.02), int(rng.integers(0, n - d + 1)))
    return out


def _agc(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone's automatic gain control: quick to turn down, slow to turn back up, then soft clipping."""
    hop = SR // 100
    frames = x.size // hop + 1
    padded = np.pad(x, (0, frames * hop - x.size))
    rms = np.sqrt(np.mean(padded.reshape(frames, hop) ** 2, axis=1) + 1e-10)
    target = rng.uniform(0.08, 0.2)
    want = np.clip(target / rms, 0.2, rng.uniform(2, 6))
    attack, release = np.exp(-1 / rng.uniform(2, 6)), np.exp(-1 / rng.uniform(40, 150))
    gain = np.empty(frames)
    g = float(want[0])
    for i, w in enumerate(want):
        a = attack if w < g else release
        g = a * g + (1 - a) * w
        gain[i] = g
    y = x * np.interp(np.arange(x.size), np.arange(frames) * hop + hop / 2, gain)
    drive = rng.uniform(1.0, 2.5)
    return np.tanh(drive * y) / np.tanh(drive)


def phone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`x` as a phone records it: handling noise, microphone hiss, band-limiting, AGC and clipping."""
    n = x.size
    x = x + _handling(n, rng) * 0.05
    x = x + rng.standard_normal(n) * rng.uniform(0.0005, 0.003)
    x = _filter(x, lo=rng.uniform(80, 300), hi=float(rng.choice([3400.0, 4000.0, 5500.0, 7000.0])), order=3)
    y = _agc(x, rng)
    return (y * rng.uniform(0.5, 0.95) / (np.max(np.abs(y)) + 1e-9)).astype(np.float32)


def voice_note(seconds: float, rng: np.random.Generator, scene: str | None = None) -> np.ndarray:
    """One voice note, float32 mono at SR: a scene (see SCENES) recorded by a phone."""
    names = list(SCENES)
    if scene is None:
        p = np.array([SCENES[k][1] for k in names])
        scene = names[rng.choice(len(names), p=p / p.sum())]
    n = int(seconds * SR)
    return phone(SCENES[scene][0](n, rng), rng)


# --- photos -----------------------------------------------------------------------------------

# Photographic wallpapers, by the Debian package that installs them.
PHOTO_SOURCES: dict[str, tuple[str, ...]] = {
    "mate-backgrounds": tuple(f"/usr/share/backgrounds/mate/nature/{f}.jpg" for f in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
        "TwoWings", "Wood", "YellowFlower")),
    "lomiri-wallpapers-16.04": tuple(f"/usr/share/backgrounds/{f}.jpg" for f in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
        "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
        "friends_by_Aitzol_Berasategi", "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
        "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")),
    "plasma-workspace-wallpapers": tuple(f"/usr/share/wallpapers/{f}/contents/images/2560x1600.jpg" for f in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "OneStandsOut", "Path", "summer_1am")),
}
AUDIO_PACKAGES = ("espeak-ng",)


def _missing_error(pkgs: list[str], what: str) -> MissingPackages:
    return MissingPackages(f"the generated phone archive is made from {what} of Debian packages, and "
                           f"{', '.join(pkgs)} {'is' if len(pkgs) == 1 else 'are'} not installed; install with:\n"
                           f"  {APT_HINT.format(pkgs=' '.join(pkgs))}", pkgs)


def photo_sources() -> list[Path]:
    """The installed photographic wallpapers; raises MissingPackages naming what is missing."""
    found, missing = [], []
    for pkg, files in PHOTO_SOURCES.items():
        present = [Path(f) for f in files if os.path.exists(f)]
        if not present:
            missing.append(pkg)
        found += present
    if missing:
        raise _missing_error(missing, "photographic wallpapers")
    return found


def _load_source(path: Path, longest: int = 1800) -> Image.Image:
    with Image.open(path) as img:
        img.draft("RGB", (longest, longest))      # JPEG: decode at a reduced scale, much faster
        img = img.convert("RGB")
    scale = longest / max(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    return img


def phone_photo(src: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A crop of `src` as a 2012 phone camera would take it: 640x480 or 480x640 (see module doc)."""
    w, h = (480, 640) if rng.random() < 0.25 else (640, 480)
    # crop: a random window of the source at a random zoom, a little tilt
    tilt = rng.normal(0, 1.5) if rng.random() < 0.6 else 0.0
    margin = 1.08 if tilt else 1.0
    full = min(src.width / (w * margin), src.height / (h * margin))
    scale = full * rng.uniform(0.3, 1.0) ** 0.8
    cw, ch = w * margin * scale, h * margin * scale
    x0, y0 = rng.uniform(0, src.width - cw), rng.uniform(0, src.height - ch)
    bw, bh = round(w * margin), round(h * margin)
    img = src.resize((bw, bh), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch), reducing_gap=2.0)
    if tilt:
        img = img.rotate(tilt, Image.Resampling.BICUBIC)
        img = img.crop(((bw - w) // 2, (bh - h) // 2, (bw - w) // 2 + w, (bh - h) // 2 + h))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # soft optics, shake
    if rng.random() < 0.15:
        k = int(rng.choice([3, 5]))
        kernel = np.zeros((k, k))
        kernel[k // 2, :] = 1.0
        if rng.random() < 0.5:
            kernel = kernel.T
        img = img.filter(ImageFilter.Kernel((k, k), kernel.ravel().tolist(), scale=k))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.3)))
    a = np.asarray(img, np.float32) / 255.0
    lin = a ** 2.2
    # white balance and exposure; some photos dark, at night or in a dim room
    night = rng.random() < 0.15
    ev = rng.uniform(-3.0, -1.8) if night else rng.normal(0.0, 0.45)
    temp = rng.normal(0.0, 0.08) + (rng.choice([-0.15, 0.2]) if night else 0.0)   # blue night or sodium lamps
    tint = rng.normal(0.0, 0.03)
    lin = lin * (2.0 ** ev) * np.array([1 + temp, 1 + tint, 1 - temp], np.float32)
    # sensor: shot noise grows with the signal, read noise dominates in the dark; some of it in colour
    iso = 4.0 if night else rng.uniform(0.6, 1.6)
    shot = np.sqrt(np.maximum(lin, 0)) * rng.standard_normal(lin.shape[:2])[..., None] * 0.012 * iso
    chroma = rng.standard_normal(lin.shape).astype(np.float32) * 0.006 * iso
    lin = lin + shot + chroma + rng.standard_normal(lin.shape[:2])[..., None] * 0.003 * iso
    if night:  # the phone brightens what it can: lifted, noisy shadows
        lin = lin * rng.uniform(1.0, 2.5) + 0.01
    # vignetting and lens shading
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - h / 2) / (h / 2)) ** 2 * (h / max(w, h)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 * (w / max(w, h)) ** 2
    lin = lin * (1.0 - rng.uniform(0.2, 0.55) * r2 / 2)[..., None]
    # tone curve, saturation
    out = np.clip(lin, 0, None) ** (1 / 2.2)
    contrast = rng.uniform(1.0, 1.35)
    out = 0.5 + (out - 0.5) * contrast
    sat = rng.uniform(1.25, 1.7) if rng.random() < 0.3 else rng.uniform(0.85, 1.15)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * sat
    img = Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))
    # the phone's over-sharpening
    sharpen = ImageFilter.UnsharpMask(radius=rng.uniform(1.0, 2.0), percent=int(rng.integers(60, 160)), threshold=2)
    return img.filter(sharpen)


# --- the archive ------------------------------------------------------------------------------

def _note_task(args: tuple) -> None:
    path, seconds, seed = args
    rng = np.random.default_rng(seed)
    write_sound(path, voice_note(seconds, rng))


def _fallback_note_task(args: tuple) -> None:
    path, seconds, seed = args
    write_sound(path, babble(seconds, np.random.default_rng(seed)))


def make_archive(folder: Path, audio_minutes: float, photos: int, seed: int = 0, fallback: bool = False,
                 workers: int = 2) -> Path:
    """A fake phone archive in `folder`: voice notes (.wav/.m4a/.amr) and photos (.jpg) in folders per year.

    Needs espeak-ng and the wallpaper packages of PHOTO_SOURCES; without them it raises MissingPackages,
    unless `fallback`, where it generates babble and procedural night skies instead."""
    folder = Path(folder)
    use_speech = espeak_available() or audio_minutes <= 0
    sources: list[Path] = []
    missing = [] if use_speech else list(AUDIO_PACKAGES)
    if photos > 0:
        try:
            sources = photo_sources()
        except MissingPackages as e:
            missing += e.packages
    if missing and not fallback:
        raise _missing_error(missing, "espeak-ng voices and photographic wallpapers")
    rng = np.random.default_rng(seed)
    # plan the voice notes: lengths, formats, seeds (the plan alone decides the output)
    notes: list[tuple[Path, float, int]] = []   # (file, seconds, seed)
    done = 0.0
    while done < audio_minutes * 60:
        seconds = float(min(rng.uniform(5, 60), audio_minutes * 60 - done + 1))
        sub = folder / f"{2012 + len(notes) % 8}" / "voice notes"
        suffix = str(rng.choice([".wav", ".m4a", ".amr"], p=[0.3, 0.4, 0.3]))
        notes.append((sub / f"note-{len(notes):04d}{suffix}", seconds, int(rng.integers(2 ** 63))))
        done += seconds
    shots = []
    for j in range(photos):
        sub = folder / f"{2012 + j % 8}" / "DCIM"
        shots.append((sub / f"IMG_{j:04d}.jpg", int(rng.integers(2 ** 63))))
    for path, *_ in notes + shots:
        path.parent.mkdir(parents=True, exist_ok=True)

    note_task = _note_task if use_speech else _fallback_note_task
    cache: dict[Path, Image.Image] = {}
    lock = threading.Lock()

    def photo_task(j: int) -> None:
        path, pseed = shots[j]
        prng = np.random.default_rng(pseed)
        if not sources:
            write_photo(path, sky_photo(prng), prng)
            return
        src_path = sources[int(prng.integers(len(sources)))]
        with lock:
            if src_path not in cache:
                cache[src_path] = _load_source(src_path)
            src = cache[src_path]
        write_photo(path, phone_photo(src, prng), prng)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        # longest notes first, so that the two workers finish together
        order = sorted(range(len(notes)), key=lambda i: -notes[i][1])
        jobs = [pool.submit(note_task, notes[i]) for i in order] + [pool.submit(photo_task, j) for j in range(photos)]
        for job in jobs:
            job.result()
    return folder
