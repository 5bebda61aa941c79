"""Attribution preservation, measured with captum as the oracle: maps (`attributions`), teacher-student agreement
(`agreement`), localization against masks (`localization`), the deployed IR (`ir_attributions`), figures
(`figures`) and the compression report (`report`). Nothing here imports NNCF or anything above this layer."""
