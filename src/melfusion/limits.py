"""Input limits shared by the pipeline and its front ends (command line, web app): one place, no torch import."""

MAX_AUDIO_SECONDS = 600.0  # a clip's length; longer than the model's window is made window by window
MAX_STEPS = 1000  # denoising / image-inversion steps
MAX_SAMPLES = 64  # clips per call from the command line and the app
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit seed
