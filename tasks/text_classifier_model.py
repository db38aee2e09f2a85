"""MLflow pyfunc wrapper around a fine-tuned Hugging Face sequence classifier.

mlflow_track logs this file as a "model from code": MLflow stores the file with the model, so
`mlflow.pyfunc.load_model("models:/<name>/<version>")` works without this repository installed.
The Hugging Face model folder travels as the artifact `hf_model` (config with id2label, weights,
tokenizer); fetch_model and the prediction service read that folder directly.
"""

from __future__ import annotations

import mlflow
import pandas as pd

HF_ARTIFACT = "hf_model"
INPUT_COLUMN = "text"


class TextClassifier(mlflow.pyfunc.PythonModel):
    """Predict a label name and its softmax score for each input text."""

    def load_context(self, context):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = context.artifacts[HF_ARTIFACT]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path)
        self.model.eval()
        self.torch = torch
        self.batch_size = 32

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            texts = model_input[INPUT_COLUMN].astype(str).tolist()
        else:
            texts = [str(text) for text in model_input]
        id2label = self.model.config.id2label
        labels, scores = [], []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size], truncation=True, padding=True, return_tensors="pt"
            )
            with self.torch.inference_mode():
                probabilities = self.model(**batch).logits.softmax(dim=-1)
            best = probabilities.max(dim=-1)
            labels.extend(id2label[int(index)] for index in best.indices)
            scores.extend(float(score) for score in best.values)
        return pd.DataFrame({"label": labels, "score": scores})


mlflow.models.set_model(TextClassifier())
