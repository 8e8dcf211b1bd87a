"""Where a model runs and in which precision, decided in one place for training and inference.

V100 (compute capability 7.0) has no bf16, whatever `torch.cuda.is_bf16_supported()` answers, and
no FlashAttention-2: fp16 there, bf16 from Ampere (8.0) on, fp32 on the CPU."""

import torch


def cuda_half_dtype() -> torch.dtype:
    major, _ = torch.cuda.get_device_capability()
    return torch.bfloat16 if major >= 8 else torch.float16


def inference() -> tuple[torch.device, torch.dtype]:
    """The first GPU in half precision when there is one, else the CPU in fp32."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device()), cuda_half_dtype()
    return torch.device("cpu"), torch.float32
