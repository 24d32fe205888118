"""Causal-LM distillation (see docs/llm.md): token-level losses computed in chunks so the full
(batch, length, vocabulary) fp32 tensor is never held, Hugging Face / GGUF causal LMs as teacher and
student, text data with packing and prompt masks, vocabulary checks between teacher and student,
sequence-level KD on stored teacher generations and on-policy (GKD) sampling."""
from distill.data.token_cache import TokenTeacher, TokenTeacherCache, build_token_cache
from distill.llm.data import packed_text_data, prompt_response_data, read_jsonl, read_text, train_bpe_tokenizer
from distill.llm.generate import generate, load_generator, sample_generations, save_causal_lm
from distill.llm.losses import chunked_token_loss, shared_vocabulary
from distill.llm.models import (ChunkedLM, causal_lm_from_config, load_causal_lm, load_tokenizer,
                                save_gguf, shared_vocabulary_size, student_from_teacher)
from distill.llm.onpolicy import OnPolicy, sample_completions
from distill.llm.sequence import generate_teacher_data, read_prompts

__all__ = ["ChunkedLM", "TokenTeacher", "TokenTeacherCache", "build_token_cache", "causal_lm_from_config", "chunked_token_loss", "load_causal_lm", "load_tokenizer",
           "packed_text_data", "prompt_response_data", "read_jsonl", "read_text", "save_gguf", "shared_vocabulary",
           "shared_vocabulary_size", "student_from_teacher", "train_bpe_tokenizer", "generate", "load_generator", "read_prompts", "sample_generations",
           "save_causal_lm", "OnPolicy", "generate_teacher_data", "sample_completions"]
