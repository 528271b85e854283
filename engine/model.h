/*
 * model.h — the family-neutral model description (from config.json) and the
 * non-expert weights of a loaded checkpoint. Families: qwen3_moe, qwen2_moe,
 * mixtral, olmoe. Expert weights are NOT here: the forward pass reaches them
 * only through an eng_expert_provider (engine/expert.h).
 */
#ifndef EMOE_MODEL_H
#define EMOE_MODEL_H

#include "engine/common.h"
#include "engine/tensor.h"

typedef enum eng_family {
    ENG_FAMILY_QWEN3_MOE = 0,
    ENG_FAMILY_QWEN2_MOE,
    ENG_FAMILY_MIXTRAL,
    ENG_FAMILY_OLMOE,
} eng_family;

typedef enum eng_qknorm {
    ENG_QKNORM_NONE = 0,
    ENG_QKNORM_PER_HEAD,  /* qwen3_moe: RMSNorm over head_dim, per head */
    ENG_QKNORM_FULL,      /* olmoe: RMSNorm over the whole q / k projection */
} eng_qknorm;

#define ENG_MAX_EOS 8

typedef struct eng_model_desc {
    eng_family family;
    char model_type[32];
    int dim;            /* hidden_size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int n_experts;      /* routed experts per layer */
    int top_k;
    int expert_ffn;     /* intermediate size of one routed expert */
    int shared_ffn;     /* shared expert intermediate size; 0 = none */
    int shared_gate;    /* 1: sigmoid(shared_expert_gate(x)) scales the shared expert */
    int norm_topk;      /* renormalise the top-k weights to sum 1 */
    eng_qknorm qk_norm;
    int qkv_bias;
    float rope_theta;
    float eps;
    int tied_embeddings;
    int vocab;
    int max_ctx;        /* max_position_embeddings */
    int bos_id;         /* -1 if none */
    int n_eos;
    int eos_ids[ENG_MAX_EOS];
} eng_model_desc;

/* Parses a config.json text (path used in messages) into desc. Refuses unknown
 * families and unsupported features (rope_scaling, sliding window, dense layers,
 * clip_qkv...) naming the field. */
emoe_status eng_desc_parse(const char *json_text, size_t len, const char *path,
                           eng_model_desc *desc, emoe_err *err);
emoe_status eng_desc_load(const char *model_dir, eng_model_desc *desc, emoe_err *err);
const char *eng_family_name(eng_family f);
int eng_family_from_name(const char *s, eng_family *out);

/* Tensor-name scheme of a family. */
void eng_expert_tensor_names(const eng_model_desc *d, int layer, int expert,
                             char gate[128], char up[128], char down[128]);

typedef struct eng_layer_weights {
    eng_tensor attn_norm;          /* (dim) */
    eng_tensor wq;                 /* (n_heads*head_dim, dim) */
    eng_tensor wk, wv;             /* (n_kv_heads*head_dim, dim) */
    eng_tensor wo;                 /* (dim, n_heads*head_dim) */
    eng_tensor bq, bk, bv;         /* qkv bias (optional) */
    eng_tensor q_norm, k_norm;     /* (head_dim) per-head or (n*head_dim) full (optional) */
    eng_tensor ffn_norm;           /* (dim) */
    eng_tensor router;             /* (n_experts, dim) */
    eng_tensor sh_gate, sh_up;     /* (shared_ffn, dim) (optional) */
    eng_tensor sh_down;            /* (dim, shared_ffn) (optional) */
    eng_tensor sh_expert_gate;     /* (1, dim) (optional) */
} eng_layer_weights;

typedef struct eng_weights {
    eng_tensor embed;       /* (vocab, dim) */
    eng_tensor final_norm;  /* (dim) */
    eng_tensor lm_head;     /* (vocab, dim); == embed when tied */
    eng_layer_weights *layers; /* n_layers */
} eng_weights;

#endif
