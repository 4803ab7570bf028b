"""Models: the one loader (`load`), the built-in tiny model (`tiny`), LoRA (`lora`), reward heads (`heads`),
log-probs (`logprobs`), attention layouts for packed rows and shared-prompt pairs (`attention`), the frozen
reference policy (`reference`), and `posttrain models` (`cli`)."""
