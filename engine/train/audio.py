"""`ciel train audio`: the waveform VAE of the audio engine, trained on a CPU.

- Model: `engine.audio.model.AudioVAE` — non-causal encoder, the causal streaming decoder the
  audio process plays.
- Loss: multi-resolution STFT (spectral convergence + log-magnitude L1 at FFT sizes 1024 … 64,
  hop a quarter of the size) + beta · KL with *free bits*: each latent dimension's KL (averaged
  over batch and frames) counts at least `free_bits` nats, so the optimiser gains nothing by
  collapsing a dimension to the prior and the knobs keep moving the sound. Beta rises linearly
  over `kl_warmup_steps`.
- Batches: `batch` random windows of `window` samples; a clip is picked with probability
  proportional to its length, a window inside it at random; short clips are zero-padded.
- Export: weights + the PCA of encoder means over random windows (so knob 1 is the direction the
  data varies most) + up to `export_clips` encoded clips for replay.
- Conditioning by content (`condition = "folder"`, `ciel train audio --condition folder`): each
  clip's class from the ingest (its top-level folder or its label) is given to the decoder as a
  learned embedding (`model.class_dim` values) projected into a bias per stage; the encoder never
  sees it. Clips without a class are left out. The card lists the classes.

Previews at every checkpoint (RUN/previews/): `audio-STEP-recon.wav` (two dataset snippets, each
followed by its reconstruction), `audio-STEP-walk.wav` (the live walk through encoded snippets,
decoded block by block with the streaming decoder, as the engine plays it) and `audio-STEP.png`
(their spectrograms). Runs on the training process's main thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..audio.model import MAX_CLASSES, AudioModelConfig, AudioVAE, export_audio_model
from ..audio.navigation import MotionBank, Voice
from ..configio import field
from ..errors import DatasetError
from . import previews
from .ingest import Dataset
from .loop import Env, RunConfig, Snapshot, wrap_ddp

WIDE_BAND_STRIDES = (4, 4, 8)


@dataclass(frozen=True)
class AudioTrainConfig:
    """`ciel train audio` settings (saved as RUN/train.toml and in the model card)."""

    run: RunConfig = RunConfig()
    model: AudioModelConfig = AudioModelConfig(upsample="nearest")  # resize-convolution: nothing repeats per frame
    batch: int = field(4, minimum=1, maximum=4096, doc="Windows per step (per process under torchrun).")
    window: int = field(8192, minimum=256, maximum=1 << 22, doc="Samples per window (a multiple of the model's hop; 8192 = 0.5 s at 16 kHz).")
    lr: float = field(1e-3, minimum=0.0, maximum=1.0, doc="Adam learning rate.")
    grad_clip: float = field(3.0, minimum=0.0, doc="Gradient norm clip (0 = off).")
    beta: float = field(0.05, minimum=0.0, maximum=100.0, doc="Weight of the KL term.")
    free_bits: float = field(0.1, minimum=0.0, maximum=10.0, doc="Nats per latent dimension the KL term does not penalise.")
    kl_warmup_steps: int = field(500, minimum=0, doc="Steps over which beta rises from 0.")
    fft_sizes: tuple[int, ...] = field((1024, 512, 256, 128, 64), doc="FFT sizes of the multi-resolution STFT loss.")
    dc_weight: float = field(10.0, minimum=0.0, doc="Weight of the squared difference of the windows' mean (DC offset).")
    comb_weight: float = field(4.0, minimum=0.0, maximum=100.0, doc="Extra weight of the log-magnitude error on the harmonics of the latent frame rate "
                                     "(where the decoder's own drone lives).")
    preview_seconds: float = field(2.0, minimum=0.25, maximum=60.0, doc="Length of each preview snippet (s).")
    export_clips: int = field(48, minimum=0, maximum=4096, doc="Encoded stretches of the dataset stored in the model: the live walk's motion bank "
                                   "and the clips `audio/replay` plays.")
    export_clip_seconds: float = field(2.0, minimum=0.1, maximum=600.0, doc="Length of each stored stretch (s).")
    condition: str = field("none", choices=("none", "folder"), doc="'folder': condition the decoder on each clip's class "
                           "from the ingest (its top-level folder or its label); `audio/class` plays them live. "
                           "'none': one decoder for everything.")


class MultiResolutionSTFTLoss(nn.Module):
    """Sum over FFT sizes of spectral convergence + mean |log S - log Ŝ| (magnitudes, Hann window),
    plus `comb_weight` · mean |log S - log Ŝ| on the bins at the harmonics of the decoder's frame
    rate (`hop` samples a frame), for FFT sizes that resolve them (n ≥ 4 · hop).

    The frame-rate harmonics are where a waveform decoder's own artefact lives: every latent
    frame stamps the same kind of 64-sample pattern, a drone at 250, 500, 750 Hz… They are 3 % of
    the bins, so the plain mean barely sees them; the extra term holds the reconstruction's energy
    there to the data's. Inputs (B, 1, L) or (B, L) float; returns a scalar."""

    def __init__(self, fft_sizes: tuple[int, ...], hop: int = 0, comb_weight: float = 0.0) -> None:
        super().__init__()
        self.fft_sizes = fft_sizes
        self.comb_weight = comb_weight
        self.comb_bins: dict[int, torch.Tensor] = {}
        for n in fft_sizes:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)
            if hop and comb_weight and n >= 4 * hop and n % hop == 0:
                self.comb_bins[n] = torch.arange(n // hop, n // 2 + 1, n // hop)   # bins at k · rate / hop

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
        total = pred.new_zeros(())
        for n in self.fft_sizes:
            win = getattr(self, f"window_{n}")
            sp = torch.stft(pred, n, n // 4, window=win, return_complex=True).abs() + 1e-7   # (B, n/2+1, frames)
            st = torch.stft(target, n, n // 4, window=win, return_complex=True).abs() + 1e-7
            diff = (sp.log() - st.log()).abs()
            total = total + torch.linalg.norm(st - sp) / torch.linalg.norm(st) + diff.mean()
            bins = self.comb_bins.get(n)
            if bins is not None:
                total = total + self.comb_weight * (diff[:, bins.to(diff.device)].mean()
                                                    + comb_excess(sp, st, bins.to(diff.device)))
        return total


def comb_excess(pred_mag: torch.Tensor, target_mag: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """How much more the prediction's energy stands out on the frame-rate harmonic `bins` against
    their neighbours (±1, ±2 bins) than the target's does: mean over frames of
    relu(log(E_h / E_n)_pred − log(E_h / E_n)_target). Magnitudes (B, F, T); a scalar."""
    def ratio(mag: torch.Tensor) -> torch.Tensor:
        power = mag.square()                                             # (B, F, T)
        top = power.shape[1] - 1
        harm = power[:, bins].mean(dim=1)                                # (B, T)
        near = torch.stack([power[:, (bins + d).clamp(0, top)] for d in (-2, -1, 1, 2)]).mean(dim=(0, 2))
        return (harm + 1e-10).log() - (near + 1e-10).log()
    return torch.relu(ratio(pred_mag) - ratio(target_mag)).mean()


def kl_free_bits(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalised KL, raw KL) in nats per frame, summed over latent dimensions.

    mu, logvar: (B, D, T). Each dimension's KL averaged over batch and frames counts at least
    `free_bits`."""
    kl = 0.5 * (mu.square() + logvar.exp() - logvar - 1.0)
    per_dim = kl.mean(dim=(0, 2))
    return per_dim.clamp_min(free_bits).sum(), per_dim.sum()


def _archive_of(dataset: Path) -> str:
    """The archive a dataset was ingested from, as its report names it (or "its archive")."""
    import json

    try:
        return str(json.loads((dataset / "report.json").read_text("utf-8"))["archive"])
    except (OSError, ValueError, KeyError, TypeError):
        return "its archive"


class AudioTask:
    """The VAE, its optimiser, batch sampling and one step."""

    kind = "audio"

    def __init__(self, cfg: AudioTrainConfig, data: Dataset | None, env: Env,
                 audio: torch.Tensor | None = None, index: np.ndarray | None = None, samplerate: int | None = None) -> None:
        self.env = env
        if audio is None:
            if data is None or data.index.shape[0] == 0:
                raise DatasetError(f"{data.folder if data else 'dataset'}: no sound to train on "
                                   "(the ingest report lists what was skipped)")
            audio, index, samplerate = torch.from_numpy(np.array(data.audio)), np.array(data.index), data.config.samplerate
        self.class_names: tuple[str, ...] = ()
        self.clip_class: torch.Tensor | None = None      # int64 [clips]: each clip's class
        self.left_out = 0                                # clips without a class (conditioned training)
        if cfg.condition == "folder":
            index = self._classes(data, np.asarray(index, dtype=np.int64))
        model_cfg = dataclasses.replace(cfg.model, sample_rate=int(samplerate or cfg.model.sample_rate),
                                        classes=len(self.class_names))
        if model_cfg.sample_rate > 24000 and model_cfg.strides == AudioModelConfig().strides:
            # full-band archives: a 128-sample hop (2.9 ms at 44.1 kHz, 344 frames/s) keeps the
            # frame rate and the audio process's work per second near the 16 kHz model's
            model_cfg = dataclasses.replace(model_cfg, strides=WIDE_BAND_STRIDES)
        if cfg.window % model_cfg.hop:
            raise ValueError(f"window: {cfg.window} is not a multiple of the model's hop ({model_cfg.hop})")
        self.cfg = dataclasses.replace(cfg, model=model_cfg)
        self.audio = audio  # int16 [samples], CPU
        self.index = torch.from_numpy(np.asarray(index, dtype=np.int64))  # [clips, 2] (start, length)
        self.weights = self.index[:, 1].double().clamp_min(1.0)
        self.summary = dict(data.summary) if data else {}
        torch.manual_seed(cfg.run.seed)
        self.vae = AudioVAE(model_cfg).to(env.device)
        self.vae_ddp = wrap_ddp(self.vae, env)
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.stft = MultiResolutionSTFTLoss(cfg.fft_sizes, model_cfg.hop, cfg.comb_weight).to(env.device)

    def _classes(self, data: Dataset | None, index: np.ndarray) -> np.ndarray:
        """For a conditioned training: keep the clips that have a class and remember each one's;
        the index of those clips. DatasetError naming the dataset when it has no classes to
        condition on (fewer than two, or more than audio/class reaches)."""
        where = data.folder if data is not None else "dataset"
        if data is None or data.clip_class is None or not data.classes:
            archive = _archive_of(data.folder) if data is not None else "the archive"
            raise DatasetError(f"{where}: --condition folder needs classes, and this dataset has none: the sound "
                               f"files of {archive} lay directly in its folder (or a label file named none of them). "
                               "Put them in one folder per class (ARCHIVE/speech/, ARCHIVE/kitchen/, ...) or give "
                               "`ciel ingest --labels FILE`, then ingest again")
        names = data.classes
        if len(names) < 2:
            raise DatasetError(f"{where}: --condition folder needs at least two classes, and this dataset has one "
                               f"({names[0]}): put each kind of sound in a folder of its own and ingest again")
        if len(names) > MAX_CLASSES:
            raise DatasetError(f"{where}: --condition folder plays at most {MAX_CLASSES} classes (audio/class 0 to "
                               f"{MAX_CLASSES - 1}), and this dataset has {len(names)} ({', '.join(names[:5])}, ...): "
                               "group them with `ciel ingest --labels FILE` and ingest again")
        keep = np.asarray(data.clip_class) >= 0
        self.class_names = names
        self.clip_class = torch.from_numpy(np.asarray(data.clip_class)[keep].astype(np.int64))
        self.left_out = int((~keep).sum())
        return index[keep]

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": self.opt}

    def describe(self) -> dict[str, Any]:
        sr = self.cfg.model.sample_rate
        out = {"sample_rate": sr, "latent_dim": self.cfg.model.latent_dim, "batch": self.cfg.batch,
               "batch_seconds": round(self.cfg.batch * self.cfg.window / sr, 3),
               "dataset_clips": int(self.index.shape[0]), "audio_minutes": round(float(self.index[:, 1].sum()) / sr / 60, 2),
               "parameters": sum(p.numel() for p in self.vae.parameters())}
        if self.class_names:
            out.update(class_count=len(self.class_names), clips_without_class=self.left_out)
        return out

    def class_table(self) -> list[dict[str, Any]]:
        """The card's `[[classes]]` (index order): name, clips and minutes of sound of each class."""
        if self.clip_class is None:
            return []
        sr = self.cfg.model.sample_rate
        table = []
        for k, name in enumerate(self.class_names):
            mine = self.clip_class == k
            table.append({"name": name, "clips": int(mine.sum()),
                          "minutes": round(float(self.index[mine, 1].sum()) / sr / 60, 2)})
        return table

    def draw(self, g: torch.Generator, count: int, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(float32 (count, 1, length) random windows in [-1, 1] on the device, the class of each
        (count,) int64 on the device, or None for an unconditioned training)."""
        clips = torch.multinomial(self.weights, count, replacement=True, generator=g)
        out = torch.zeros(count, 1, length)
        for i, c in enumerate(clips.tolist()):
            start, n = (int(v) for v in self.index[c])
            off = int(torch.randint(0, max(1, n - length + 1), (1,), generator=g))
            piece = self.audio[start + off: start + min(n, off + length)]
            out[i, 0, : piece.numel()] = piece.float() / 32768.0
        classes = self.clip_class[clips].to(self.env.device) if self.clip_class is not None else None
        return out.to(self.env.device), classes

    def windows(self, g: torch.Generator, count: int, length: int) -> torch.Tensor:
        """float32 (count, 1, length) random windows in [-1, 1] on the device."""
        return self.draw(g, count, length)[0]

    def beta(self, step: int) -> float:
        w = self.cfg.kl_warmup_steps
        return self.cfg.beta * (min(1.0, step / w) if w else 1.0)

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        x, classes = self.draw(self.env.generator(step), cfg.batch, cfg.window)
        self.vae.train()
        recon, mu, logvar = self.vae_ddp(x, classes)
        stft = self.stft(recon, x)
        # the STFT loss barely sees an offset; a decoder that drifts to one saturates its tanh and
        # squeezes the sound into what is left of the range
        dc = (recon.mean(dim=-1) - x.mean(dim=-1)).square().mean()
        kl, kl_raw = kl_free_bits(mu, logvar, cfg.free_bits)
        loss = stft + cfg.dc_weight * dc + self.beta(step) * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.vae.parameters(), cfg.grad_clip)
        self.opt.step()
        return {"stft": stft.item(), "kl": kl_raw.item(), "dc": dc.item()}

    # --- previews and export ------------------------------------------------------------------

    def fixed_windows(self, count: int, length: int) -> torch.Tensor:
        """The same `count` windows at every checkpoint (so previews can be compared)."""
        return self.windows(torch.Generator().manual_seed(4321), count, length)

    @torch.no_grad()
    def walk(self, seconds: float) -> np.ndarray:
        """The live walk as the engine plays it (engine/audio/navigation.py: a slow walk through
        the places of encoded snippets carrying their frame-to-frame motion), decoded block by
        block by the streaming decoder. (seconds · sample_rate,) float32."""
        sr, hop = self.cfg.model.sample_rate, self.cfg.model.hop
        frames = max(2, int(seconds * sr / hop))
        self.vae.eval()
        mu, _ = self.vae.encode(self.fixed_windows(8, self.cfg.window))      # (8, D, T)
        clips = tuple(m.T.double().cpu().numpy() for m in mu)                 # 8 x (T, D)
        bank = MotionBank(clips, sr / hop, self.cfg.model.latent_dim)
        voice = Voice(bank, sr / hop, np.random.default_rng(7))
        centre = bank.random_place(voice.rng)
        path = np.stack([np.add(*voice.step(centre, 0.3, 1.0, False, hop / sr)) for _ in range(frames)])  # (frames, D)
        z = torch.from_numpy(path.T[None].astype(np.float32)).to(mu.device)  # (1, D, frames)
        stream = self.vae.streaming(1)
        blocks = [stream(z[..., i:i + 4]) for i in range(0, frames, 4)]
        return torch.cat(blocks, dim=-1)[0, 0].float().cpu().numpy()

    def write_previews(self, folder: Path, step: int) -> list[Path]:
        sr = self.cfg.model.sample_rate
        n = int(self.cfg.preview_seconds * sr) // self.cfg.model.hop * self.cfg.model.hop
        self.vae.eval()
        with torch.no_grad():
            x, classes = self.draw(torch.Generator().manual_seed(4321), 2, n)   # the fixed windows, with their classes
            recon = self.vae(x, classes)[0][..., :n]
        gap = np.zeros(sr // 4, np.float32)
        originals = [x[i, 0].cpu().numpy() for i in range(2)]
        recons = [recon[i, 0].float().cpu().numpy() for i in range(2)]
        pairs = np.concatenate([np.concatenate([o, gap, r, gap]) for o, r in zip(originals, recons)])
        walk = self.walk(2 * self.cfg.preview_seconds)
        out = [previews.save_wav(folder / f"audio-{step:08d}-recon.wav", pairs, sr),
               previews.save_wav(folder / f"audio-{step:08d}-walk.wav", walk, sr)]
        sheet = previews.spectrogram_sheet(
            [originals[0], recons[0], originals[1], recons[1], walk],
            ["data 1", f"reconstruction 1 (step {step})", "data 2", "reconstruction 2", "latent walk (streaming decoder)"], sr)
        out.append(previews.save_png(folder / f"audio-{step:08d}.png", sheet))
        return out

    def bank_windows(self) -> torch.Tensor:
        """float32 (export_clips, 1, L) stretches of the dataset spread over its clips: clip i of
        the export comes from dataset clip round(i * clips / export_clips), at a seeded offset."""
        cfg = self.cfg
        length = int(cfg.export_clip_seconds * cfg.model.sample_rate) // cfg.model.hop * cfg.model.hop
        count, clips = cfg.export_clips, int(self.index.shape[0])
        g = torch.Generator().manual_seed(5)
        out = torch.zeros(count, 1, length)
        for i in range(count):
            start, n = (int(v) for v in self.index[min(clips - 1, round(i * clips / max(count, 1)))])
            off = int(torch.randint(0, max(1, n - length + 1), (1,), generator=g))
            piece = self.audio[start + off: start + min(n, off + length)]
            out[i, 0, :piece.numel()] = piece.float() / 32768.0
        return out

    @torch.no_grad()
    def export(self, folder: Path, card_extra: dict[str, Any], snapshots: list[Snapshot]) -> Path:
        cfg = self.cfg
        self.vae.eval()
        g = torch.Generator().manual_seed(99)
        latents = [self.vae.encode(self.windows(g, 8, cfg.window))[0].cpu() for _ in range(8)]
        clips: list[torch.Tensor] = []
        levels = []
        if cfg.export_clips:
            x = self.bank_windows()
            for i in range(0, x.shape[0], 8):
                mu = self.vae.encode(x[i:i + 8].to(self.env.device))[0].cpu()   # (b, D, T)
                clips.extend(mu)
            hop = cfg.model.hop
            frames = x[:, 0, : x.shape[-1] // hop * hop].reshape(x.shape[0], -1, hop)      # (clips, T, hop)
            levels = list(10.0 * torch.log10(frames.square().mean(-1) + 1e-10))          # (T,) dBFS each
        extra = dict(card_extra)
        conditioned = (f" Conditioned on {len(self.class_names)} classes ({', '.join(self.class_names)}), "
                       f"played by audio/class." if self.class_names else "")
        extra.setdefault("description",
                         f"Waveform VAE trained by `ciel train audio` for {extra.get('steps', 0)} steps on "
                         f"{self.describe()['audio_minutes']} minutes of sound (multi-resolution STFT + KL "
                         f"with free bits); knobs are the PCA of the training latents.{conditioned}")
        vae = AudioVAE(cfg.model)
        vae.load_state_dict({k: v.cpu() for k, v in self.vae.state_dict().items()})
        decoder_states = [(snap.step, snap.seconds, {k[len("decoder."):]: v for k, v in snap.states["vae"].items()
                                                     if k.startswith("decoder.")}) for snap in snapshots]
        return export_audio_model(vae, folder, extra, torch.cat(latents), clips, decoder_states,
                                  levels if levels else None, self.class_table() or None)
