"""Audio -> chunks: finding, reading and cutting recordings."""
from .chunking import Chunk, chunk_signal, default_nfft
from .reading import AUDIO_EXTENSIONS, InMemoryAudio, find_audio_files, read_audio
from .stream import AudioStream

__all__ = ["AUDIO_EXTENSIONS", "AudioStream", "Chunk", "InMemoryAudio", "chunk_signal",
           "default_nfft", "find_audio_files", "read_audio"]
